BEGIN;
ALTER TABLE subscriptions ADD COLUMN plan_code text;
UPDATE subscriptions SET plan_code = 'basic';
COMMIT;
