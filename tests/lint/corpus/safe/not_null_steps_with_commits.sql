-- psql script: each step commits before the next
BEGIN;
ALTER TABLE users ADD CONSTRAINT users_phone_not_null CHECK (phone IS NOT NULL) NOT VALID;
COMMIT;

BEGIN;
ALTER TABLE users VALIDATE CONSTRAINT users_phone_not_null;
COMMIT;

BEGIN;
ALTER TABLE users ALTER COLUMN phone SET NOT NULL;
ALTER TABLE users DROP CONSTRAINT users_phone_not_null;
COMMIT;
