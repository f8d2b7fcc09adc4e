BEGIN;

-- Running upgrade  -> 1a2b3c4d5e6f

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE widgets (
    id SERIAL NOT NULL,
    name VARCHAR(100) NOT NULL,
    owner_id INTEGER,
    PRIMARY KEY (id),
    FOREIGN KEY(owner_id) REFERENCES users (id)
);

CREATE INDEX ix_widgets_name ON widgets (name);

INSERT INTO alembic_version (version_num) VALUES ('1a2b3c4d5e6f') RETURNING alembic_version.version_num;

COMMIT;
