-- bluegreen:ignore require-concurrent-index events is written once a day, at night
CREATE INDEX events_day_idx ON events (day);
