BEGIN;
ALTER TYPE order_state ADD VALUE 'refunded';
UPDATE orders SET state = 'refunded' WHERE refund_id IS NOT NULL AND id = 1042;
COMMIT;
