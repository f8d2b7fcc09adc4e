DROP VIEW IF EXISTS customer_summary;
CREATE VIEW customer_summary AS
  SELECT c.id, c.name, count(o.id) AS orders
  FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
  GROUP BY c.id, c.name;
