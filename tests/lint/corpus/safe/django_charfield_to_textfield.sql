BEGIN;
--
-- Alter field title on book (CharField -> TextField)
--
ALTER TABLE "library_book" ALTER COLUMN "title" TYPE text USING "title"::text;
COMMIT;
