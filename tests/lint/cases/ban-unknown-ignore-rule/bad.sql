-- bluegreen:ignore require-concurrent-indexes events is written once a day
CREATE INDEX events_day_idx ON events (day);
