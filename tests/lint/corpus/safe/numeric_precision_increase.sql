ALTER TABLE invoices ALTER COLUMN total TYPE numeric(14, 2);
