DELETE FROM order_items oi
USING orders o
WHERE oi.order_id = o.id AND o.deleted_at IS NOT NULL;
