CREATE TYPE shipment_state AS ENUM ('created', 'shipped', 'delivered');
CREATE TABLE shipments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id bigint NOT NULL,
    state shipment_state NOT NULL DEFAULT 'created'
);
