TRUNCATE TABLE cart_items;
