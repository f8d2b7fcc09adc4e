-- bluegreen:phase expand
-- bluegreen:irreversible column data is dropped

-- bluegreen:up
ALTER TABLE orders ADD COLUMN status_code varchar(20);
ALTER TABLE orders DROP COLUMN status;
