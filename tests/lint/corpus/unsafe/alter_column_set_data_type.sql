ALTER TABLE metrics ALTER COLUMN value SET DATA TYPE double precision;
