ALTER TABLE articles ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
