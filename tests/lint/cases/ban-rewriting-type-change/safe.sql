-- widening a varchar or going to text needs no rewrite
ALTER TABLE users ALTER COLUMN display_name TYPE varchar(200);
ALTER TABLE users ALTER COLUMN bio TYPE text;
