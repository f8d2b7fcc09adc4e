"""The lock model: PostgreSQL 15 lock levels, rewrites and tables per statement."""

from __future__ import annotations

from typing import Any

import pglast
import pytest

from bluegreen.migrations.lint.locks import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    EXCLUSIVE,
    NONE,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    UNKNOWN,
    LockInfo,
    blocks_text,
    default_volatility,
    lock_for,
    strongest,
    type_change,
)
from bluegreen.migrations.lint.nodes import TypeSpec, type_spec


def lock(sql: str) -> LockInfo:
    return lock_for(pglast.parse_sql(sql)[0].stmt)


# (sql, mode, rewrites, tables)
CASES = [
    # indexes
    ("CREATE INDEX i ON users (email)", SHARE, False, ("users",)),
    (
        "CREATE UNIQUE INDEX CONCURRENTLY i ON users (email)",
        SHARE_UPDATE_EXCLUSIVE,
        False,
        ("users",),
    ),
    ("DROP INDEX users_email_idx", ACCESS_EXCLUSIVE, False, ("users_email_idx",)),
    (
        "DROP INDEX CONCURRENTLY users_email_idx",
        SHARE_UPDATE_EXCLUSIVE,
        False,
        ("users_email_idx",),
    ),
    ("REINDEX INDEX users_email_idx", ACCESS_EXCLUSIVE, True, ("users_email_idx",)),
    ("REINDEX TABLE CONCURRENTLY users", SHARE_UPDATE_EXCLUSIVE, True, ("users",)),
    ("ALTER INDEX i RENAME TO j", SHARE_UPDATE_EXCLUSIVE, False, ("i",)),
    ("ALTER INDEX i SET TABLESPACE fast", ACCESS_EXCLUSIVE, True, ("i",)),
    # ADD COLUMN
    ("ALTER TABLE users ADD COLUMN age int", ACCESS_EXCLUSIVE, False, ("users",)),
    ("ALTER TABLE users ADD COLUMN n int NOT NULL DEFAULT 0", ACCESS_EXCLUSIVE, False, ("users",)),
    (
        "ALTER TABLE users ADD COLUMN t timestamptz DEFAULT now()",
        ACCESS_EXCLUSIVE,
        False,
        ("users",),
    ),
    (
        "ALTER TABLE users ADD COLUMN t timestamptz DEFAULT CURRENT_TIMESTAMP",
        ACCESS_EXCLUSIVE,
        False,
        ("users",),
    ),
    (
        "ALTER TABLE users ADD COLUMN u uuid DEFAULT gen_random_uuid()",
        ACCESS_EXCLUSIVE,
        True,
        ("users",),
    ),
    ("ALTER TABLE users ADD COLUMN r float8 DEFAULT random()", ACCESS_EXCLUSIVE, True, ("users",)),
    (
        "ALTER TABLE users ADD COLUMN t timestamptz DEFAULT clock_timestamp()",
        ACCESS_EXCLUSIVE,
        True,
        ("users",),
    ),
    ("ALTER TABLE users ADD COLUMN id2 bigserial", ACCESS_EXCLUSIVE, True, ("users",)),
    (
        "ALTER TABLE users ADD COLUMN id2 bigint GENERATED ALWAYS AS IDENTITY",
        ACCESS_EXCLUSIVE,
        True,
        ("users",),
    ),
    (
        "ALTER TABLE users ADD COLUMN d int GENERATED ALWAYS AS (a * 2) STORED",
        ACCESS_EXCLUSIVE,
        True,
        ("users",),
    ),
    (
        "ALTER TABLE orders ADD COLUMN user_id bigint REFERENCES users (id)",
        ACCESS_EXCLUSIVE,
        False,
        ("orders", "users"),
    ),
    # constraints
    (
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES public.users (id)",
        SHARE_ROW_EXCLUSIVE,
        False,
        ("orders", "users"),
    ),
    (
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES users (id) NOT VALID",
        SHARE_ROW_EXCLUSIVE,
        False,
        ("orders", "users"),
    ),
    ("ALTER TABLE orders VALIDATE CONSTRAINT fk", SHARE_UPDATE_EXCLUSIVE, False, ("orders",)),
    ("ALTER TABLE orders ADD CONSTRAINT c CHECK (total > 0)", ACCESS_EXCLUSIVE, False, ("orders",)),
    ("ALTER TABLE orders ADD CONSTRAINT u UNIQUE (ref)", ACCESS_EXCLUSIVE, False, ("orders",)),
    (
        "ALTER TABLE orders ADD CONSTRAINT u UNIQUE USING INDEX orders_ref_idx",
        ACCESS_EXCLUSIVE,
        False,
        ("orders",),
    ),
    ("ALTER TABLE orders DROP CONSTRAINT c", ACCESS_EXCLUSIVE, False, ("orders",)),
    ("ALTER TABLE orders ALTER COLUMN a SET NOT NULL", ACCESS_EXCLUSIVE, False, ("orders",)),
    ("ALTER TABLE orders ALTER COLUMN a DROP NOT NULL", ACCESS_EXCLUSIVE, False, ("orders",)),
    ("ALTER TABLE orders ALTER COLUMN a SET DEFAULT 0", ACCESS_EXCLUSIVE, False, ("orders",)),
    # type changes
    ("ALTER TABLE orders ALTER COLUMN a TYPE bigint", ACCESS_EXCLUSIVE, True, ("orders",)),
    ("ALTER TABLE orders ALTER COLUMN a TYPE text", ACCESS_EXCLUSIVE, False, ("orders",)),
    (
        "ALTER TABLE orders ALTER COLUMN a TYPE int USING a::int",
        ACCESS_EXCLUSIVE,
        True,
        ("orders",),
    ),
    # whole-table maintenance
    ("ALTER TABLE t SET LOGGED", ACCESS_EXCLUSIVE, True, ("t",)),
    ("ALTER TABLE t SET UNLOGGED", ACCESS_EXCLUSIVE, True, ("t",)),
    ("ALTER TABLE t SET TABLESPACE slow", ACCESS_EXCLUSIVE, True, ("t",)),
    ("ALTER TABLE t SET (fillfactor = 70)", SHARE_UPDATE_EXCLUSIVE, False, ("t",)),
    ("ALTER TABLE t SET (autovacuum_enabled = off)", SHARE_UPDATE_EXCLUSIVE, False, ("t",)),
    ("ALTER VIEW v SET (security_barrier = true)", ACCESS_EXCLUSIVE, False, ("v",)),
    ("ALTER TABLE t ALTER COLUMN c SET STATISTICS 500", SHARE_UPDATE_EXCLUSIVE, False, ("t",)),
    ("ALTER TABLE t ENABLE TRIGGER trg", SHARE_ROW_EXCLUSIVE, False, ("t",)),
    ("ALTER TABLE t CLUSTER ON t_pkey", SHARE_UPDATE_EXCLUSIVE, False, ("t",)),
    ("ALTER TABLE p DETACH PARTITION p1", ACCESS_EXCLUSIVE, False, ("p", "p1")),
    ("ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY", SHARE_UPDATE_EXCLUSIVE, False, ("p", "p1")),
    ("ALTER TABLE p ATTACH PARTITION p1 FOR VALUES IN (1)", ACCESS_EXCLUSIVE, False, ("p", "p1")),
    ("VACUUM FULL t", ACCESS_EXCLUSIVE, True, ("t",)),
    ("VACUUM (ANALYZE) t", SHARE_UPDATE_EXCLUSIVE, False, ("t",)),
    ("ANALYZE t", SHARE_UPDATE_EXCLUSIVE, False, ("t",)),
    ("CLUSTER t USING t_pkey", ACCESS_EXCLUSIVE, True, ("t",)),
    ("TRUNCATE a, b CASCADE", ACCESS_EXCLUSIVE, False, ("a", "b")),
    ("REFRESH MATERIALIZED VIEW mv", ACCESS_EXCLUSIVE, True, ("mv",)),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", EXCLUSIVE, True, ("mv",)),
    # LOCK TABLE
    ("LOCK TABLE t", ACCESS_EXCLUSIVE, False, ("t",)),
    ("LOCK TABLE t IN SHARE MODE", SHARE, False, ("t",)),
    ("LOCK TABLE t IN ROW EXCLUSIVE MODE", ROW_EXCLUSIVE, False, ("t",)),
    ("LOCK TABLE t IN ACCESS SHARE MODE", ACCESS_SHARE, False, ("t",)),
    # renames and drops
    ("ALTER TABLE users RENAME COLUMN name TO full_name", ACCESS_EXCLUSIVE, False, ("users",)),
    ("ALTER TABLE users RENAME TO accounts", ACCESS_EXCLUSIVE, False, ("users",)),
    ("ALTER TABLE users SET SCHEMA archive", ACCESS_EXCLUSIVE, False, ("users",)),
    ("ALTER TABLE users DROP COLUMN legacy", ACCESS_EXCLUSIVE, False, ("users",)),
    ("DROP TABLE a, archive.b", ACCESS_EXCLUSIVE, False, ("a", "archive.b")),
    ("DROP TRIGGER trg ON s.t", ACCESS_EXCLUSIVE, False, ("s.t",)),
    ("DROP FUNCTION f()", NONE, False, ()),
    # creating things
    ("CREATE TABLE x (id bigint PRIMARY KEY)", NONE, False, ()),
    (
        "CREATE TABLE x (id bigint, u bigint REFERENCES users (id))",
        SHARE_ROW_EXCLUSIVE,
        False,
        ("users",),
    ),
    ("CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1)", ACCESS_EXCLUSIVE, False, ("p",)),
    (
        "CREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        SHARE_ROW_EXCLUSIVE,
        False,
        ("t",),
    ),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", ACCESS_EXCLUSIVE, False, ("v",)),
    ("CREATE POLICY p ON t USING (true)", ACCESS_EXCLUSIVE, False, ("t",)),
    ("COMMENT ON TABLE t IS 'x'", SHARE_UPDATE_EXCLUSIVE, False, ("t",)),
    ("COMMENT ON COLUMN public.t.c IS 'x'", SHARE_UPDATE_EXCLUSIVE, False, ("t",)),
    ("CREATE STATISTICS s ON a, b FROM t", SHARE_UPDATE_EXCLUSIVE, False, ("t",)),
    ("ALTER TYPE mood ADD VALUE 'meh'", NONE, False, ()),
    # data
    ("UPDATE t SET a = 1", ROW_EXCLUSIVE, False, ("t",)),
    ("DELETE FROM t WHERE id = 1", ROW_EXCLUSIVE, False, ("t",)),
    ("INSERT INTO t VALUES (1)", ROW_EXCLUSIVE, False, ("t",)),
    ("SELECT * FROM t", ACCESS_SHARE, False, ("t",)),
    ("SELECT * FROM t FOR UPDATE", ROW_SHARE, False, ("t",)),
    ("COPY t FROM STDIN", ROW_EXCLUSIVE, False, ("t",)),
    # no table lock
    ("SET lock_timeout = '2s'", NONE, False, ()),
    ("BEGIN", NONE, False, ()),
    ("CREATE EXTENSION IF NOT EXISTS pgcrypto", NONE, False, ()),
    ("DO $$ BEGIN PERFORM 1; END $$", UNKNOWN, False, ()),
]


@pytest.mark.parametrize(("sql", "mode", "rewrites", "tables"), CASES, ids=[c[0] for c in CASES])
def test_lock_for(sql: str, mode: str, rewrites: bool, tables: tuple[str, ...]) -> None:
    info = lock(sql)
    assert (info.mode, info.rewrites, info.tables) == (mode, rewrites, tables)


@pytest.mark.parametrize(
    ("mode", "reads", "writes"),
    [
        (ACCESS_SHARE, False, False),
        (ROW_SHARE, False, False),
        (ROW_EXCLUSIVE, False, False),
        (SHARE_UPDATE_EXCLUSIVE, False, False),
        (SHARE, False, True),
        (SHARE_ROW_EXCLUSIVE, False, True),
        (EXCLUSIVE, False, True),
        (ACCESS_EXCLUSIVE, True, True),
    ],
)
def test_blocks_follow_the_conflict_table(mode: str, reads: bool, writes: bool) -> None:
    info = lock(f"LOCK TABLE t IN {mode} MODE")
    assert (info.mode, info.blocks_reads, info.blocks_writes) == (mode, reads, writes)
    assert info.blocks == blocks_text(mode)


def test_alter_table_takes_the_strongest_lock_of_its_subcommands() -> None:
    info = lock(
        "ALTER TABLE t SET (fillfactor = 70), ENABLE TRIGGER trg, ALTER COLUMN c SET STATISTICS 9"
    )
    assert info.mode == SHARE_ROW_EXCLUSIVE
    info = lock("ALTER TABLE t VALIDATE CONSTRAINT c, ADD COLUMN x int")
    assert info.mode == ACCESS_EXCLUSIVE
    assert info.scans


def test_alter_table_rewrites_when_any_subcommand_does() -> None:
    info = lock("ALTER TABLE t ADD COLUMN a int, ALTER COLUMN b TYPE bigint")
    assert info.rewrites
    assert info.scans


def test_scans_are_reported_separately_from_rewrites() -> None:
    assert lock("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)").scans
    assert not lock("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID").scans
    assert lock("ALTER TABLE t ALTER COLUMN a SET NOT NULL").scans
    assert lock("CREATE INDEX i ON t (a)").scans
    assert not lock("ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX i").scans


def test_strongest() -> None:
    assert strongest([ACCESS_SHARE, SHARE, ROW_EXCLUSIVE]) == SHARE
    assert strongest([]) == NONE


def first_cmd(sql: str) -> Any:
    node: Any = pglast.parse_sql(sql)[0].stmt
    return node.cmds[0]


def spec(sql_type: str) -> TypeSpec:
    result = type_spec(first_cmd(f"ALTER TABLE t ALTER COLUMN c TYPE {sql_type}").def_.typeName)
    assert result is not None
    return result


@pytest.mark.parametrize(
    ("old", "new", "rewrites"),
    [
        ("varchar(50)", "varchar(100)", False),
        ("varchar(50)", "varchar", False),
        ("varchar(50)", "text", False),
        ("character varying(50)", "text", False),
        ("text", "varchar", False),
        ("varchar(100)", "varchar(50)", True),
        ("text", "varchar(20)", True),
        ("numeric(10,2)", "numeric(12,2)", False),
        ("numeric(10,2)", "numeric", False),
        ("numeric(10,2)", "numeric(12,3)", True),
        ("numeric(10,2)", "numeric(8,2)", True),
        ("numeric", "numeric(10,2)", True),
        ("timestamp(3)", "timestamp(6)", False),
        ("timestamp(6)", "timestamp(3)", True),
        ("timestamp", "timestamptz", True),
        ("interval(3)", "interval", False),
        ("int", "bigint", True),
        ("integer", "int4", False),
        ("smallint", "int", True),
        ("int", "text", True),
        ("json", "jsonb", True),
        ("text", "citext", False),
        ("char(5)", "char(10)", True),
        ("char(5)", "text", True),
        ("cidr", "inet", False),
        ("int[]", "bigint[]", True),
        ("varbit(8)", "varbit(16)", False),
    ],
)
def test_type_change_rewrites(old: str, new: str, rewrites: bool) -> None:
    change = type_change(spec(old), spec(new), using=False)
    assert change.rewrites is rewrites, change.reason
    assert change.known_old


@pytest.mark.parametrize(
    ("new", "rewrites"),
    [("text", False), ("varchar(255)", False), ("numeric(12,2)", False), ("bigint", True)],
)
def test_type_change_with_an_unknown_old_type_assumes_widening(new: str, rewrites: bool) -> None:
    change = type_change(None, spec(new), using=False)
    assert change.rewrites is rewrites
    assert not change.known_old


def test_type_change_with_using_always_rewrites() -> None:
    assert type_change(spec("varchar(10)"), spec("text"), using=True).rewrites


class _Schema:
    def column_type(self, table: str, column: str) -> TypeSpec | None:
        return spec("varchar(20)") if (table, column) == ("t", "c") else None

    def function_volatility(self, name: str) -> str | None:
        return "i" if name == "my_stable_fn" else None

    def has_not_null_check(self, table: str, column: str) -> bool:
        return (table, column) == ("t", "c")


def test_known_column_type_decides_rewrite() -> None:
    node = pglast.parse_sql("ALTER TABLE t ALTER COLUMN c TYPE varchar(10)")[0].stmt
    assert lock_for(node, _Schema()).rewrites
    assert not lock("ALTER TABLE t ALTER COLUMN c TYPE varchar(10)").rewrites


def test_known_validated_check_means_set_not_null_does_not_scan() -> None:
    node = pglast.parse_sql("ALTER TABLE t ALTER COLUMN c SET NOT NULL")[0].stmt
    assert not lock_for(node, _Schema()).scans


@pytest.mark.parametrize(
    ("default", "volatile"),
    [
        ("0", False),
        ("'pending'", False),
        ("now()", False),
        ("CURRENT_TIMESTAMP", False),
        ("(now() AT TIME ZONE 'utc')", False),
        ("'{}'::jsonb", False),
        ("ARRAY[]::text[]", False),
        ("gen_random_uuid()", True),
        ("uuid_generate_v4()", True),
        ("random()", True),
        ("md5(random()::text)", True),
        ("clock_timestamp()", True),
        ("nextval('s')", True),
        ("my_func()", True),
        ("my_stable_fn()", False),
    ],
)
def test_default_volatility(default: str, volatile: bool) -> None:
    expr = (
        first_cmd(f"ALTER TABLE t ADD COLUMN c text DEFAULT {default}").def_.constraints[0].raw_expr
    )
    assert default_volatility(expr, _Schema())[0] is volatile
