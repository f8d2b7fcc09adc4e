CREATE TABLE metrics (
    recorded_at timestamptz NOT NULL,
    name text NOT NULL,
    value double precision
) PARTITION BY RANGE (recorded_at);
CREATE TABLE metrics_2024 PARTITION OF metrics
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
