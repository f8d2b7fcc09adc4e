-- bluegreen:phase expand

-- bluegreen:up
ALTER TABLE users ADD COLUMN full_name text;
ALTER TABLE users ADD CONSTRAINT users_full_name_not_null CHECK (full_name IS NOT NULL) NOT VALID;

CREATE FUNCTION users_sync_full_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.full_name IS NULL THEN
    NEW.full_name := NEW.name;
  ELSIF NEW.name IS NULL OR NEW.name IS DISTINCT FROM NEW.full_name THEN
    NEW.name := NEW.full_name;
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER users_sync_full_name BEFORE INSERT OR UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION users_sync_full_name();

-- bluegreen:down
DROP TRIGGER users_sync_full_name ON users;
DROP FUNCTION users_sync_full_name();
ALTER TABLE users DROP COLUMN full_name;
