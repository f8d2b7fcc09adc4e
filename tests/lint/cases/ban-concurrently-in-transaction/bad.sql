BEGIN;
ALTER TABLE users ADD COLUMN last_login_at timestamptz;
CREATE INDEX CONCURRENTLY users_last_login_at_idx ON users (last_login_at);
COMMIT;
