BEGIN;

-- Running upgrade 1a2b3c4d5e6f -> 2b3c4d5e6f70

ALTER TABLE widgets ADD COLUMN color VARCHAR(20);

UPDATE alembic_version SET version_num='2b3c4d5e6f70' WHERE alembic_version.version_num = '1a2b3c4d5e6f';

COMMIT;
