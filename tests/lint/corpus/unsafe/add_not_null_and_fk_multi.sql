ALTER TABLE order_items
  ADD COLUMN warehouse_id integer NOT NULL,
  ADD CONSTRAINT order_items_warehouse_fk FOREIGN KEY (warehouse_id) REFERENCES warehouses (id);
