CREATE SEQUENCE invoice_number_seq;
ALTER TABLE invoices ADD COLUMN number bigint DEFAULT nextval('invoice_number_seq');
