-- V17: enforce unique SKUs
CREATE UNIQUE INDEX products_sku_key ON products (sku);
