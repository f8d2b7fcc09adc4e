BEGIN;
--
-- Add field is_archived to project
--
ALTER TABLE "projects_project" ADD COLUMN "is_archived" boolean DEFAULT false NOT NULL;
ALTER TABLE "projects_project" ALTER COLUMN "is_archived" DROP DEFAULT;
COMMIT;
