ALTER TABLE accounts ADD COLUMN settings jsonb NOT NULL DEFAULT '{}'::jsonb;
COMMENT ON COLUMN accounts.settings IS 'per-account feature settings';
