ALTER TABLE api_clients ADD COLUMN secret text DEFAULT md5(random()::text);
