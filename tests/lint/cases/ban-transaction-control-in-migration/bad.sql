-- bluegreen:phase expand
-- bluegreen:up
BEGIN;
ALTER TABLE users ADD COLUMN phone text;
COMMIT;
