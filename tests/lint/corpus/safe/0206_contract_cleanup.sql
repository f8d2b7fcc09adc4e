-- bluegreen:phase contract
-- bluegreen:irreversible drops the old column

-- bluegreen:up
DROP TRIGGER IF EXISTS users_sync_full_name ON users;
DROP FUNCTION IF EXISTS users_sync_full_name();
ALTER TABLE users DROP COLUMN name;
