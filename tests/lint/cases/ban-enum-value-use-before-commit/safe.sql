ALTER TYPE order_state ADD VALUE 'refunded';
COMMIT;
UPDATE orders SET state = 'refunded' WHERE id = 42;
