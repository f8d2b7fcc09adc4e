-- CONCURRENTLY: reads and writes go on (the runner runs it outside a transaction)
CREATE INDEX CONCURRENTLY users_email_idx ON users (email);

-- a table created in the same file is new and empty: a plain index is fine
CREATE TABLE invitations (id bigint PRIMARY KEY, email text NOT NULL);
CREATE INDEX invitations_email_idx ON invitations (email);
