ALTER TABLE webhooks ALTER COLUMN payload TYPE jsonb USING payload::jsonb;
