CREATE TABLE daily_totals AS
  SELECT date_trunc('day', created_at) AS day, sum(total) AS total
  FROM orders GROUP BY 1;
CREATE UNIQUE INDEX daily_totals_day_key ON daily_totals (day);
