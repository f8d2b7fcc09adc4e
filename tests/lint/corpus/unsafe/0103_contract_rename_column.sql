-- bluegreen:phase contract
-- bluegreen:irreversible seed contract step

-- bluegreen:up
ALTER TABLE orders DROP COLUMN status;
ALTER TABLE orders RENAME COLUMN status_code TO status;
