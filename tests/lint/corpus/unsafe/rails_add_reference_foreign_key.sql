-- add_reference :comments, :post, foreign_key: true, index: false
ALTER TABLE "comments" ADD "post_id" bigint;
ALTER TABLE "comments" ADD CONSTRAINT "fk_rails_2fd19c0db7"
FOREIGN KEY ("post_id")
  REFERENCES "posts" ("id")
;
