-- constant and stable defaults are stored in the catalog: no rewrite (PostgreSQL 11+)
ALTER TABLE users ADD COLUMN active boolean NOT NULL DEFAULT true;
ALTER TABLE users ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
-- a volatile default set after the column exists applies to new rows only
ALTER TABLE users ADD COLUMN token uuid;
ALTER TABLE users ALTER COLUMN token SET DEFAULT gen_random_uuid();
