-- Migration 1: expand (seed)
ALTER TABLE orders ADD COLUMN status_code varchar(20);
