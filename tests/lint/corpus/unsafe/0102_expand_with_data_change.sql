-- bluegreen:phase expand

-- bluegreen:up
ALTER TABLE orders ADD COLUMN status_code varchar(20);
UPDATE orders SET status_code = status;

-- bluegreen:down
ALTER TABLE orders DROP COLUMN status_code;
