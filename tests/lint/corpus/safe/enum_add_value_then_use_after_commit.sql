ALTER TYPE ticket_status ADD VALUE 'on_hold';
COMMIT;
BEGIN;
UPDATE tickets SET status = 'on_hold' WHERE id = 77;
COMMIT;
