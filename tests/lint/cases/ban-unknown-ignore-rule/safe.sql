-- bluegreen:ignore require-concurrent-index events is written once a day
CREATE INDEX events_day_idx ON events (day);
