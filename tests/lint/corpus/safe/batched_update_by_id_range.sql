UPDATE orders SET status_code = status
WHERE id BETWEEN 1 AND 10000 AND status_code IS NULL;
