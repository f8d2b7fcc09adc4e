BEGIN;

-- Running upgrade 3f2a9c1d7e4b -> 8b1e0c55d2aa

ALTER TABLE line_items ADD CONSTRAINT fk_line_items_product_id_products FOREIGN KEY(product_id) REFERENCES products (id) ON DELETE RESTRICT;

UPDATE alembic_version SET version_num='8b1e0c55d2aa' WHERE alembic_version.version_num = '3f2a9c1d7e4b';

COMMIT;
