-- bluegreen:phase expand
--
-- The orders table of the demo application, as v1 knows it (the seed's example): the
-- order's state lives in the text column status. The next migrations move it to
-- status_code without downtime (expand, migrate, contract).
--
-- A new table: nobody else holds or waits for its locks, so creating it is safe at any time.

-- bluegreen:up
CREATE TABLE orders (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer   text NOT NULL,
    amount     numeric(12, 2) NOT NULL CHECK (amount >= 0),
    status     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- bluegreen:down
-- bluegreen:ignore ban-drop-table undoing the first migration: no version of the app is left that uses orders
DROP TABLE orders;
