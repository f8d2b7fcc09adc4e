-- bluegreen:phase contract
-- bluegreen:up
DROP TABLE legacy_orders;
