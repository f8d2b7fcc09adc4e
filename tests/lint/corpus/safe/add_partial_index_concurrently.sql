CREATE INDEX CONCURRENTLY orders_pending_idx ON orders (created_at) WHERE state = 'pending';
