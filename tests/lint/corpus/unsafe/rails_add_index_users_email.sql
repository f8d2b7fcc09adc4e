-- 20240311094512_add_index_to_users_email.rb (rails db:migrate:up --verbose)
CREATE INDEX "index_users_on_email" ON "users" ("email");
