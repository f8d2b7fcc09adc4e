ALTER INDEX index_orders_on_user RENAME TO index_orders_on_user_id;
