-- bluegreen:phase migrate

-- bluegreen:up
-- bluegreen:backfill batch-size=5000
UPDATE orders SET status_code = status WHERE status_code IS NULL;

-- bluegreen:down
SELECT 1;
