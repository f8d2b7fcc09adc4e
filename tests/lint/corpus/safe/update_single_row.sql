UPDATE feature_flags SET enabled = true WHERE name = 'new_checkout';
