DELETE FROM sessions
WHERE id IN (SELECT id FROM sessions WHERE last_seen_at < now() - interval '90 days' LIMIT 5000);
