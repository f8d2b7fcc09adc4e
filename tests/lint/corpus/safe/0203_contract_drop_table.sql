-- bluegreen:phase contract
-- bluegreen:irreversible table data is gone

-- bluegreen:up
DROP TABLE legacy_order_statuses;
