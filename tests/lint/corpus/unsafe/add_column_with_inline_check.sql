ALTER TABLE tickets ADD COLUMN priority smallint CHECK (priority BETWEEN 1 AND 5);
