BEGIN;
--
-- Alter unique_together for membership (1 constraint(s))
--
ALTER TABLE "teams_membership" ADD CONSTRAINT "teams_membership_team_id_user_id_7f1a2b3c_uniq" UNIQUE ("team_id", "user_id");
COMMIT;
