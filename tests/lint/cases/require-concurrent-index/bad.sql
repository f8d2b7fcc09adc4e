-- a plain CREATE INDEX on a table in use blocks writes for the whole build
CREATE INDEX users_email_idx ON users (email);
