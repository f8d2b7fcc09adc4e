ALTER TABLE "orders" ALTER COLUMN "status_code" SET NOT NULL;
