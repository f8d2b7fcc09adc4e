CREATE TABLE IF NOT EXISTS audit_entries (id bigserial PRIMARY KEY, body jsonb);
CREATE INDEX IF NOT EXISTS audit_entries_body_idx ON audit_entries USING gin (body);
