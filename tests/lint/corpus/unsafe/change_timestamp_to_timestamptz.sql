ALTER TABLE sessions ALTER COLUMN expires_at TYPE timestamp with time zone;
