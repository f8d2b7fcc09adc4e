CREATE INDEX CONCURRENTLY IF NOT EXISTS index_line_items_on_order_id ON line_items (order_id);
ALTER TABLE line_items
  ADD CONSTRAINT fk_line_items_order_id FOREIGN KEY (order_id) REFERENCES orders (id) NOT VALID;
