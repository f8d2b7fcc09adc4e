CREATE TABLE import_staging (line text);
TRUNCATE import_staging;
