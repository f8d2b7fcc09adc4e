BEGIN;
--
-- Alter field quantity on stockmovement
--
ALTER TABLE "inventory_stockmovement" ALTER COLUMN "quantity" TYPE bigint USING "quantity"::bigint;
COMMIT;
