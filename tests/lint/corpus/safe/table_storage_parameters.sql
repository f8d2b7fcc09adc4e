ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.01, fillfactor = 90);
ALTER TABLE events ALTER COLUMN payload SET STATISTICS 500;
