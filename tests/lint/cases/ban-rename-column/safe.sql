-- expand: a new column next to the old one (a trigger keeps them in sync)
ALTER TABLE users ADD COLUMN full_name text;
