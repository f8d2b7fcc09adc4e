BEGIN;
--
-- Alter field created_at on order
--
CREATE INDEX "shop_order_created_at_5b1c1a0e" ON "shop_order" ("created_at");
COMMIT;
