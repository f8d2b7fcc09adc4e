ALTER TABLE articles ALTER COLUMN title TYPE text;
