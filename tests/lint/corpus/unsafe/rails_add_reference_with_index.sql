-- add_reference :line_items, :order, foreign_key: true
ALTER TABLE "line_items" ADD "order_id" bigint;
CREATE INDEX "index_line_items_on_order_id" ON "line_items" ("order_id");
ALTER TABLE "line_items" ADD CONSTRAINT "fk_rails_6b2a5c1f93" FOREIGN KEY ("order_id") REFERENCES "orders" ("id");
