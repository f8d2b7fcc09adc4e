-- ids are running out
ALTER TABLE events ALTER COLUMN id TYPE bigint;
