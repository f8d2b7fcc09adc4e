-- disable_ddl_transaction!
-- add_index :orders, [:user_id, :created_at], algorithm: :concurrently
CREATE INDEX CONCURRENTLY "index_orders_on_user_id_and_created_at" ON "orders" ("user_id", "created_at");
