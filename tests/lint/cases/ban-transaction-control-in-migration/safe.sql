-- bluegreen:phase expand
-- bluegreen:up
ALTER TABLE users ADD COLUMN phone text;
