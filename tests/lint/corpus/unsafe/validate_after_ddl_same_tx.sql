BEGIN;
ALTER TABLE orders ADD COLUMN shipped_at timestamptz;
ALTER TABLE orders VALIDATE CONSTRAINT orders_customer_id_fkey;
COMMIT;
