-- bluegreen:phase contract
-- bluegreen:irreversible the old column's data is gone

-- bluegreen:up
ALTER TABLE orders DROP COLUMN status;
