-- bluegreen:phase contract
-- bluegreen:up
ALTER TABLE users DROP COLUMN legacy_status;
