UPDATE products SET slug = lower(replace(name, ' ', '-')) WHERE slug IS NULL;
