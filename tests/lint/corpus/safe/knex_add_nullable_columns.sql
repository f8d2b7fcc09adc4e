alter table "customers" add column "nickname" varchar(255) null, add column "birthday" date null;
