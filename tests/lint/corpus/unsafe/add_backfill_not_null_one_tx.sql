BEGIN;
ALTER TABLE orders ADD COLUMN region text;
UPDATE orders SET region = 'eu' WHERE region IS NULL;
ALTER TABLE orders ALTER COLUMN region SET NOT NULL;
COMMIT;
