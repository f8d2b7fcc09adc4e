-- bluegreen:phase migrate
--
-- Rename orders.status to status_code without downtime (step 3 of 4: migrate)
--
-- Validates CHECK (status_code IS NOT NULL) on the existing rows. VALIDATE takes a SHARE
-- UPDATE EXCLUSIVE lock: reads and writes go on during the scan; it is its own migration so
-- the scan never runs under a stronger lock. It fails if the backfill left a NULL (status
-- was NULL somewhere): fix those rows and rerun.
--
-- Down: nothing to undo; the constraint goes away with status_code.

-- bluegreen:up
ALTER TABLE orders VALIDATE CONSTRAINT orders_status_code_not_null;

-- bluegreen:down
SELECT 1;  -- nothing to undo (see above)
