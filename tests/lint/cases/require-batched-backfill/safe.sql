-- bluegreen:backfill batch-size=1000
UPDATE orders SET status_code = status WHERE status_code IS NULL;

-- a targeted fix of a few rows
UPDATE orders SET status = 'cancelled' WHERE id = 42;
