CREATE TABLE imports (
    id bigserial PRIMARY KEY,
    source text,
    payload text
);
CREATE INDEX imports_source_idx ON imports (source);
ALTER TABLE imports ALTER COLUMN source SET NOT NULL;
ALTER TABLE imports ALTER COLUMN payload TYPE jsonb USING payload::jsonb;
ALTER TABLE imports ADD CONSTRAINT imports_source_check CHECK (source <> '');
ALTER TABLE imports ADD COLUMN checksum uuid DEFAULT gen_random_uuid();
ALTER TABLE imports RENAME COLUMN source TO origin;
