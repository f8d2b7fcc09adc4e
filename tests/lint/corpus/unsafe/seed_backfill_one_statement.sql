-- Migration 2: copy data (seed, Fase 2)
UPDATE orders
SET status_code = status
WHERE status_code IS NULL;
