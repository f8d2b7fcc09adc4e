-- Flyway runs each versioned migration in a single transaction
ALTER TABLE shipments ADD CONSTRAINT shipments_weight_check CHECK (weight_grams >= 0) NOT VALID;
ALTER TABLE shipments VALIDATE CONSTRAINT shipments_weight_check;
