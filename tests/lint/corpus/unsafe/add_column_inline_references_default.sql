ALTER TABLE tasks ADD COLUMN project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id);
