BEGIN;
--
-- Add field author to article
--
ALTER TABLE "blog_article" ADD COLUMN "author_id" bigint NULL CONSTRAINT "blog_article_author_id_8c3d4e5f_fk_auth_user_id" REFERENCES "auth_user"("id") DEFERRABLE INITIALLY DEFERRED; SET CONSTRAINTS "blog_article_author_id_8c3d4e5f_fk_auth_user_id" IMMEDIATE;
CREATE INDEX "blog_article_author_id_8c3d4e5f" ON "blog_article" ("author_id");
COMMIT;
