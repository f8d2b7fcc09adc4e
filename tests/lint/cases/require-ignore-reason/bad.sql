-- bluegreen:ignore require-concurrent-index
CREATE INDEX events_day_idx ON events (day);
