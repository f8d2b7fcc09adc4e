-- bluegreen:phase expand
--
-- Rename orders.status to status_code without downtime (step 1 of 4: expand)
--
-- Adds status_code (text) next to status and a trigger that keeps the two equal on every
-- INSERT and UPDATE, whichever one a writer sets: the running code (reading and writing
-- status) and the new code (reading and writing status_code) can serve traffic side by
-- side. If a writer sets both to different values, status_code wins.
--
-- status is NOT NULL, so status_code gets a CHECK ... NOT VALID: the trigger fills
-- status_code on every write, so new rows pass, and existing rows are checked later without
-- blocking writes.
--
-- After this migration: run 0003_index_orders_status_code_idx.sql (the index v2's status
-- filter uses) and 0004_rename_orders_status_to_status_code_backfill.sql (the backfill)
-- right away. Do not let code read status_code before the backfill has finished:
-- older rows still have NULL there until then.

-- bluegreen:up
ALTER TABLE orders ADD COLUMN status_code text;

ALTER TABLE orders ADD CONSTRAINT orders_status_code_not_null
  CHECK (status_code IS NOT NULL) NOT VALID;

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

-- bluegreen:down
DROP TRIGGER IF EXISTS bluegreen_sync_orders_status_status_code ON orders;
DROP FUNCTION IF EXISTS bluegreen_sync_orders_status_status_code();
-- bluegreen:ignore ban-drop-column undoing this expand: the code that uses status_code no longer serves traffic
ALTER TABLE orders DROP COLUMN IF EXISTS status_code;
