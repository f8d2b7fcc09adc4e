CREATE INDEX idx_orders_customer ON public.orders USING btree (customer_id);
