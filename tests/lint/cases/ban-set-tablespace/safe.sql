CREATE INDEX CONCURRENTLY measurements_day_idx ON measurements (day) TABLESPACE fast;
