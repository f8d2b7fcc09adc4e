ALTER TABLE audit_log ADD COLUMN seq bigserial;
