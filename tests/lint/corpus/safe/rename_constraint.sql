ALTER TABLE orders RENAME CONSTRAINT orders_fk TO orders_customer_id_fkey;
