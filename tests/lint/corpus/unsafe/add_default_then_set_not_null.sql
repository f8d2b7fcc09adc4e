ALTER TABLE accounts ADD COLUMN credit_limit integer DEFAULT 0;
ALTER TABLE accounts ALTER COLUMN credit_limit SET NOT NULL;
