-- the last step of CHECK ... NOT VALID -> VALIDATE -> SET NOT NULL (earlier steps ran
-- in earlier migrations): PostgreSQL uses the validated CHECK and skips the scan
ALTER TABLE users ALTER COLUMN phone SET NOT NULL;
ALTER TABLE users DROP CONSTRAINT users_phone_not_null;
