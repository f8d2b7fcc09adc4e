ALTER TABLE audit_events
    ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT clock_timestamp();
