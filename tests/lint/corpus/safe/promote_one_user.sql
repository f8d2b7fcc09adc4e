UPDATE users SET role = 'admin' WHERE email = 'ops@example.com';
