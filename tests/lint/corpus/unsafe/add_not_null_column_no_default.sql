-- seed anti-pattern 2: NOT NULL without default
ALTER TABLE users ADD COLUMN phone varchar(20) NOT NULL;
