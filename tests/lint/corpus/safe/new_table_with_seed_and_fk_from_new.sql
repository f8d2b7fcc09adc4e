CREATE TABLE order_statuses (id smallint PRIMARY KEY, name text NOT NULL UNIQUE);
INSERT INTO order_statuses VALUES (1, 'pending'), (2, 'completed'), (3, 'cancelled');
ALTER TABLE orders ADD COLUMN status_id smallint;
ALTER TABLE orders ADD CONSTRAINT orders_status_id_fkey
  FOREIGN KEY (status_id) REFERENCES order_statuses (id) NOT VALID;
