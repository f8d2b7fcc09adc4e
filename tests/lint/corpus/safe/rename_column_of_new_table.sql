CREATE TABLE invitations (id bigserial PRIMARY KEY, mail text NOT NULL, sent_at timestamptz);
ALTER TABLE invitations RENAME COLUMN mail TO email;
CREATE UNIQUE INDEX invitations_email_key ON invitations (email);
