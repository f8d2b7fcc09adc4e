SET lock_timeout TO '3s';
ALTER TABLE orders ADD COLUMN priority integer DEFAULT 0 NOT NULL;
