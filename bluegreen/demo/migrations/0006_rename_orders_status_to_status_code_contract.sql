-- bluegreen:phase contract
--
-- Rename orders.status to status_code without downtime (step 4 of 4: contract)
--
-- Run only once no running version of the app uses status (the old colour drained and not
-- coming back): from here on a read or write of status fails. This migration:
-- * drops the sync trigger and its function
-- * makes status_code NOT NULL: PostgreSQL 12+ skips the table scan thanks to the validated
--   CHECK, which is then dropped as redundant (the VALIDATE before it is a no-op after
--   0005_rename_orders_status_to_status_code_validate.sql; it only scans, without blocking
--   writes, when this migration is re-applied after its down)
-- * drops orders.status (brief ACCESS EXCLUSIVE lock, no table rewrite)
--
-- Down: re-adds status and the trigger, and copies the data back in batches, so code using
-- status can run again. The column comes back nullable; indexes and constraints that were
-- on status are not recreated.

-- bluegreen:up
DROP TRIGGER IF EXISTS bluegreen_sync_orders_status_status_code ON orders;
DROP FUNCTION IF EXISTS bluegreen_sync_orders_status_status_code();
ALTER TABLE orders VALIDATE CONSTRAINT orders_status_code_not_null;
ALTER TABLE orders ALTER COLUMN status_code SET NOT NULL;
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_status_code_not_null;
ALTER TABLE orders DROP COLUMN status;

-- bluegreen:down
ALTER TABLE orders ADD COLUMN status text;

CREATE OR REPLACE FUNCTION bluegreen_sync_orders_status_status_code() RETURNS trigger
LANGUAGE plpgsql AS $bluegreen$
BEGIN
  -- Values are compared as text: it works for every type, json included.
  IF TG_OP = 'INSERT' THEN
    IF NEW.status_code IS NULL THEN
      NEW.status_code := NEW.status;  -- old code wrote status
    ELSIF NEW.status::text IS DISTINCT FROM NEW.status_code::text THEN
      NEW.status := NEW.status_code;  -- new code wrote status_code
    END IF;
  ELSIF NEW.status_code::text IS DISTINCT FROM OLD.status_code::text THEN
    -- new code changed status_code (it wins if both changed)
    IF NEW.status::text IS DISTINCT FROM NEW.status_code::text THEN
      NEW.status := NEW.status_code;
    END IF;
  ELSIF NEW.status::text IS DISTINCT FROM OLD.status::text
     OR (NEW.status_code IS NULL AND NEW.status IS NOT NULL) THEN
    -- old code changed status, or a row the backfill has not reached yet
    NEW.status_code := NEW.status;
  END IF;
  RETURN NEW;
END
$bluegreen$;

CREATE TRIGGER bluegreen_sync_orders_status_status_code
  BEFORE INSERT OR UPDATE ON orders
  FOR EACH ROW EXECUTE FUNCTION bluegreen_sync_orders_status_status_code();

-- bluegreen:ignore ban-data-change-outside-migrate undoing the contract means copying the data back
-- bluegreen:backfill batch-size=1000
UPDATE orders SET status = status_code
WHERE status IS NULL AND status_code IS NOT NULL;
