-- bluegreen:phase expand
-- bluegreen:up
ALTER TABLE orders ADD COLUMN status_code text;
UPDATE orders SET status_code = status WHERE id = 1;
