CLUSTER events USING events_created_at_idx;
