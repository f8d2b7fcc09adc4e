ALTER TABLE customers RENAME TO clients;
CREATE VIEW customers AS SELECT * FROM clients;
