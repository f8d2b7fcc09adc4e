-- PostgreSQL 11+: constant defaults are stored in the catalog, no rewrite
ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT false;
