ALTER TABLE orders ADD COLUMN tracking_id uuid NOT NULL DEFAULT uuid_generate_v4();
