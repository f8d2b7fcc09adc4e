-- expand: new code stops writing legacy_code, so it must become optional first
ALTER TABLE products ALTER COLUMN legacy_code DROP NOT NULL;
