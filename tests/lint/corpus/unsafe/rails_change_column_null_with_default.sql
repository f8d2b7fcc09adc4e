-- change_column_null :users, :active, false, true
UPDATE "users" SET "active" = TRUE WHERE "active" IS NULL;
ALTER TABLE "users" ALTER COLUMN "active" SET NOT NULL;
