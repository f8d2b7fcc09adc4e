DELETE FROM sessions WHERE last_seen_at < now() - interval '90 days';
