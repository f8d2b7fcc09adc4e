CREATE MATERIALIZED VIEW top_products AS
  SELECT product_id, count(*) AS sold FROM order_items GROUP BY product_id
  WITH NO DATA;
CREATE UNIQUE INDEX top_products_product_id_key ON top_products (product_id);
REFRESH MATERIALIZED VIEW top_products;
