CREATE SEQUENCE IF NOT EXISTS ticket_number_seq START 1000;
ALTER TABLE tickets ADD COLUMN number bigint;
ALTER TABLE tickets ALTER COLUMN number SET DEFAULT nextval('ticket_number_seq');
