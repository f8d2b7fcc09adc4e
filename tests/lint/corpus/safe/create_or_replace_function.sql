CREATE OR REPLACE FUNCTION order_total(order_id bigint) RETURNS numeric
LANGUAGE sql STABLE AS $$
  SELECT coalesce(sum(quantity * unit_price), 0) FROM order_items WHERE order_items.order_id = $1
$$;
