BEGIN;

-- Running upgrade c91f00e2b1a7 -> 0d4b8e7c2f11

ALTER TABLE users DROP COLUMN legacy_role;

UPDATE alembic_version SET version_num='0d4b8e7c2f11' WHERE alembic_version.version_num = 'c91f00e2b1a7';

COMMIT;
