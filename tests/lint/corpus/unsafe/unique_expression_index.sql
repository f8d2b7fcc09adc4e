CREATE UNIQUE INDEX IF NOT EXISTS users_lower_email ON users (lower(email));
