-- country was varchar(64); only ISO codes are stored now
ALTER TABLE addresses ALTER COLUMN country TYPE varchar(2);
