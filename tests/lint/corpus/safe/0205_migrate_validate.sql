-- bluegreen:phase migrate

-- bluegreen:up
ALTER TABLE users VALIDATE CONSTRAINT users_full_name_not_null;

-- bluegreen:down
SELECT 1;
