-- the CHECK (status_code IS NOT NULL) was validated by the previous migration
ALTER TABLE orders ALTER COLUMN status_code SET NOT NULL;
ALTER TABLE orders DROP CONSTRAINT orders_status_code_not_null;
