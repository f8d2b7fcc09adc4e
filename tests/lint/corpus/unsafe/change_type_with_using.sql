ALTER TABLE products ALTER COLUMN weight TYPE integer USING weight::integer;
