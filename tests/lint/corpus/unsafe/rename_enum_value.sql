ALTER TYPE order_state RENAME VALUE 'canceled' TO 'cancelled';
