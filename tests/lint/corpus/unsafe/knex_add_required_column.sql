alter table "customers" add column "tax_id" varchar(255) not null;
