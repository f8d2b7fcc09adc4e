-- separate migration, after orders_user_id_fkey was added NOT VALID
ALTER TABLE orders VALIDATE CONSTRAINT orders_user_id_fkey;
