-- bluegreen:phase migrate
--
-- Rename orders.status to status_code without downtime (step 2 of 4: migrate)
--
-- Copies status into status_code for the rows written before
-- 0002_rename_orders_status_to_status_code_expand.sql, in short batches by primary key (the
-- backfill directive): each batch is its own transaction, progress is saved with it, and a
-- rerun resumes after the last finished batch. Rows written since the expand phase are
-- already in sync (trigger), so the WHERE clause skips them; running it twice is harmless.
--
-- After this migration: every row has status_code = status. Deploy the code that reads and
-- writes status_code only; the trigger keeps the running code that uses status correct
-- while both versions serve traffic.
--
-- Down: nothing to undo; the copied values go away with status_code when
-- 0002_rename_orders_status_to_status_code_expand.sql is rolled back.

-- bluegreen:up
-- bluegreen:backfill batch-size=1000
UPDATE orders SET status_code = status
WHERE status_code IS NULL AND status IS NOT NULL;

-- bluegreen:down
SELECT 1;  -- nothing to undo (see above)
