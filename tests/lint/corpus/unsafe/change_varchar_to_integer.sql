ALTER TABLE addresses ALTER COLUMN zip_code TYPE integer USING zip_code::integer;
