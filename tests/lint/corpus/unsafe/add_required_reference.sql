ALTER TABLE comments ADD COLUMN post_id integer NOT NULL REFERENCES posts(id);
