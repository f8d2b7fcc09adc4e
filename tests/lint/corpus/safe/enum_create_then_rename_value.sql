CREATE TYPE payment_method AS ENUM ('card', 'transfer', 'cash');
ALTER TYPE payment_method RENAME VALUE 'transfer' TO 'bank_transfer';
CREATE TABLE payments_v2 (id bigserial PRIMARY KEY, method payment_method NOT NULL);
