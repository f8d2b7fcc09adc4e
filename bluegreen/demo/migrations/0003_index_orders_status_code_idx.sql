-- bluegreen:phase expand
--
-- Add index orders_status_code_idx on orders (expand)
--
-- CREATE INDEX CONCURRENTLY builds the index without blocking reads or writes (it waits for
-- running transactions and scans the table twice, so it takes longer). It cannot run inside
-- a transaction, so it is alone in its migration and the runner runs it outside one. If the
-- build fails it leaves an INVALID index behind, which IF NOT EXISTS would keep: the runner
-- drops such an index (concurrently) before it retries.

-- bluegreen:up
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_status_code_idx ON orders (status_code);

-- bluegreen:down
DROP INDEX CONCURRENTLY IF EXISTS orders_status_code_idx;
