ALTER TABLE subscriptions
  ADD COLUMN renews_on date NOT NULL DEFAULT (CURRENT_DATE + interval '30 days');
