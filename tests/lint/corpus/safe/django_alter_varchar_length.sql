BEGIN;
--
-- Alter field bio on profile
--
ALTER TABLE "accounts_profile" ALTER COLUMN "bio" TYPE varchar(500);
COMMIT;
