-- bluegreen:phase migrate
-- bluegreen:up
-- bluegreen:backfill
UPDATE orders SET status_code = status WHERE status_code IS NULL;
