ALTER TABLE measurements SET TABLESPACE cold_storage;
