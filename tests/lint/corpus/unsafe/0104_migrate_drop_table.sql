-- bluegreen:phase migrate
-- bluegreen:irreversible drops data

-- bluegreen:up
DROP TABLE order_status_history;
