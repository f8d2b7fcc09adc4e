BEGIN;
--
-- Alter field price on product (IntegerField -> DecimalField)
--
ALTER TABLE "shop_product" ALTER COLUMN "price" TYPE numeric(10, 2) USING "price"::numeric(10, 2);
COMMIT;
