INSERT INTO currencies (code, name) VALUES ('EUR', 'Euro'), ('USD', 'US Dollar')
ON CONFLICT (code) DO NOTHING;
SELECT setval('currencies_id_seq', (SELECT max(id) FROM currencies));
