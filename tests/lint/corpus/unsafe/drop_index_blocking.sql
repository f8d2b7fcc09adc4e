-- index no longer used by any query (checked pg_stat_user_indexes)
DROP INDEX IF EXISTS index_orders_on_legacy_state;
