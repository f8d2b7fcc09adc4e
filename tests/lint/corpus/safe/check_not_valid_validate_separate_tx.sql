BEGIN;
ALTER TABLE shipments ADD CONSTRAINT shipments_weight_check CHECK (weight_grams >= 0) NOT VALID;
COMMIT;
BEGIN;
ALTER TABLE shipments VALIDATE CONSTRAINT shipments_weight_check;
COMMIT;
