DROP INDEX index_events_on_user_id;
DROP INDEX index_events_on_kind;
