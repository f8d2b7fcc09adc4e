COMMENT ON TABLE orders IS 'customer orders';
GRANT SELECT ON orders TO reporting;
REVOKE UPDATE ON orders FROM reporting;
