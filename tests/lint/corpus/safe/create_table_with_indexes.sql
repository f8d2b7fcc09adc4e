CREATE TABLE order_statuses (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_statuses_created_at_idx ON order_statuses (created_at);
INSERT INTO order_statuses (name) VALUES ('pending'), ('completed'), ('cancelled');
