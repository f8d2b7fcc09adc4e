UPDATE app_settings SET value = '30' WHERE key = 'session_timeout_minutes';
INSERT INTO app_settings (key, value) VALUES ('max_upload_mb', '25')
  ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
