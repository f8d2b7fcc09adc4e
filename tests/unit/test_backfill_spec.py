"""BackfillSpec: reading the directive, refusing what cannot be batched, rewriting the UPDATE."""

from __future__ import annotations

import pglast
import pytest
from pglast import ast

from bluegreen.errors import MigrationFileError
from bluegreen.migrations import backfill as bf
from bluegreen.migrations.sql import parse_statements


def spec_of(sql: str, *, index: int = 0) -> bf.BackfillSpec:
    statements = parse_statements(sql, first_line=10, source="migrations/0003_copy.sql")
    return bf.BackfillSpec.from_statement(
        statements[index], "0003_copy", index, source="migrations/0003_copy.sql"
    )


SEED = (
    "-- bluegreen:backfill batch-size=5000 pause=20ms\n"
    "UPDATE orders SET status_code = status WHERE status_code IS NULL;"
)


def test_seed_statement_with_arguments() -> None:
    spec = spec_of(SEED)
    assert spec.migration == "0003_copy"
    assert spec.index == 0
    assert spec.source == "migrations/0003_copy.sql:11"
    assert spec.sql == "UPDATE orders SET status_code = status WHERE status_code IS NULL"
    assert spec.table == "orders"
    assert spec.target == "orders"
    assert spec.only is False
    assert spec.has_where is True
    assert spec.set_columns == ("status_code",)
    assert spec.options == bf.BackfillOptions(batch_size=5000, pause=0.02)


def test_defaults_without_arguments() -> None:
    spec = spec_of("-- bluegreen:backfill\nUPDATE t SET a = 1")
    assert spec.options == bf.BackfillOptions()
    assert spec.options.pause > 0
    assert spec.has_where is False


def test_every_argument() -> None:
    spec = spec_of(
        "-- bluegreen:backfill key=Ref batch-size=10 pause=0 max-lag=2s max-lock-waiters=0 "
        "max-throttle=1min lock-timeout=500ms statement-timeout=3s\n"
        "UPDATE t SET a = 1 WHERE a IS NULL"
    )
    assert spec.options == bf.BackfillOptions(
        key="ref",
        batch_size=10,
        pause=0.0,
        max_lag=2.0,
        max_lock_waiters=0,
        max_throttle=60.0,
        lock_timeout=0.5,
        statement_timeout=3.0,
    )


def test_quoted_key_keeps_its_case() -> None:
    spec = spec_of('-- bluegreen:backfill key="Ref"\nUPDATE t SET a = 1')
    assert spec.options.key == "Ref"


def test_alias_schema_only_and_from_clause() -> None:
    spec = spec_of(
        "-- bluegreen:backfill\n"
        "UPDATE ONLY app.orders o SET status_id = s.id FROM order_statuses s "
        "WHERE o.status = s.name AND o.status_id IS NULL"
    )
    assert spec.table == "app.orders"
    assert spec.target == "o"
    assert spec.only is True
    assert spec.set_columns == ("status_id",)


def test_checksum_follows_the_statement_not_the_directive() -> None:
    a = spec_of("-- bluegreen:backfill batch-size=10\nUPDATE t SET a = 1 WHERE a IS NULL")
    b = spec_of("-- bluegreen:backfill batch-size=99\nupdate t set a=1 where a is null")
    c = spec_of("-- bluegreen:backfill\nUPDATE t SET a = 2 WHERE a IS NULL")
    assert a.checksum == b.checksum != c.checksum


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("-- bluegreen:backfill\nDELETE FROM t WHERE a", ":10: .*this statement is DeleteStmt"),
        ("-- bluegreen:backfill\nWITH x AS (SELECT 1) UPDATE t SET a = 1", ":11: .*WITH clause"),
        ("-- bluegreen:backfill\nUPDATE t SET a = 1 RETURNING a", ":11: .*remove RETURNING"),
        ("-- bluegreen:backfill\nUPDATE t SET a = $1", ":11: .*bind parameters"),
        ("-- bluegreen:backfill\nUPDATE t SET a = 1 WHERE CURRENT OF c", ":11: .*CURRENT OF"),
        ("-- bluegreen:backfill size=5\nUPDATE t SET a = 1", ":10: unknown backfill argument"),
        ("-- bluegreen:backfill pause\nUPDATE t SET a = 1", ":10: .*needs a value"),
        ("-- bluegreen:backfill pause=1s pause=2s\nUPDATE t SET a = 1", ":10: .*given twice"),
        ("-- bluegreen:backfill batch-size=0\nUPDATE t SET a = 1", ":10: batch-size=0: expected"),
        ("-- bluegreen:backfill batch-size=x\nUPDATE t SET a = 1", ":10: batch-size=x: expected"),
        ("-- bluegreen:backfill pause=soon\nUPDATE t SET a = 1", ":10: pause=soon: expected a"),
        ("-- bluegreen:backfill max-lag=0\nUPDATE t SET a = 1", ":10: max-lag=0: must be more"),
        ("-- bluegreen:backfill key=a.b\nUPDATE t SET a = 1", ":10: key=a.b: expected a column"),
        ("-- bluegreen:backfill key=id\nUPDATE t SET id = 1", ":11: key=id: .*cannot SET the key"),
    ],
    ids=[
        "delete",
        "with",
        "returning",
        "parameter",
        "current-of",
        "unknown-argument",
        "no-value",
        "twice",
        "batch-zero",
        "batch-word",
        "bad-duration",
        "zero-lag",
        "qualified-key",
        "sets-key",
    ],
)
def test_refusals_name_file_and_line(sql: str, message: str) -> None:
    with pytest.raises(MigrationFileError, match=f"^migrations/0003_copy.sql{message}"):
        spec_of(sql)


def update_of(sql: str) -> ast.UpdateStmt:
    (raw,) = pglast.parse_sql(sql)
    assert isinstance(raw.stmt, ast.UpdateStmt)
    return raw.stmt


def test_key_batch_keeps_the_where_and_adds_the_range() -> None:
    spec = spec_of("-- bluegreen:backfill\nUPDATE orders SET a = b WHERE a IS NULL OR a = ''")
    first = bf.key_batch_sql(spec, "id", "bigint", first=True)
    assert first == (
        "UPDATE orders SET a = b WHERE (a IS NULL OR a = '') "
        "AND orders.id <= CAST(CAST($1 AS text) AS bigint)"
    )
    later = bf.key_batch_sql(spec, "id", "bigint", first=False)
    assert later.endswith(
        "WHERE (a IS NULL OR a = '') AND (orders.id > CAST(CAST($1 AS text) AS bigint) "
        "AND orders.id <= CAST(CAST($2 AS text) AS bigint))"
    )
    update_of(later)


def test_key_batch_without_where_and_with_alias_and_quoted_key() -> None:
    spec = spec_of('-- bluegreen:backfill\nUPDATE "Order" AS o SET n = n + 1')
    sql = bf.key_batch_sql(spec, "Key", "uuid", first=False)
    assert sql == (
        'UPDATE "Order" AS o SET n = n + 1 WHERE o."Key" > CAST(CAST($1 AS text) AS uuid) '
        'AND o."Key" <= CAST(CAST($2 AS text) AS uuid)'
    )


def test_key_bound_sql_walks_the_index() -> None:
    assert bf.key_bound_sql("app.orders", False, "id", "integer", first=False) == (
        "SELECT s.k::text, count(*) OVER () FROM (SELECT id AS k FROM app.orders "
        "WHERE id > CAST(CAST($1 AS text) AS integer) AND id <= CAST(CAST($2 AS text) AS integer) "
        "ORDER BY id LIMIT $3) AS s ORDER BY s.k DESC LIMIT 1"
    )
    first = bf.key_bound_sql("t", True, "id", "integer", first=True)
    assert "FROM ONLY t WHERE id <= CAST(CAST($1 AS text) AS integer) ORDER BY id LIMIT $2" in first


def test_ctid_batch_adds_a_page_range() -> None:
    spec = spec_of("-- bluegreen:backfill\nUPDATE logs l SET b = a::text WHERE b IS NULL")
    sql = bf.ctid_batch_sql(spec)
    assert sql == (
        "UPDATE logs AS l SET b = CAST(a AS text) WHERE b IS NULL AND "
        "(l.ctid >= CAST('(' || CAST($1 AS bigint) || ',0)' AS tid) "
        "AND l.ctid < CAST('(' || CAST($2 AS bigint) || ',0)' AS tid))"
    )
    update_of(sql)


def test_from_clause_survives_the_rewrite() -> None:
    spec = spec_of(
        "-- bluegreen:backfill\n"
        "UPDATE orders o SET status_id = s.id FROM order_statuses s "
        "WHERE o.status = s.name AND o.status_id IS NULL"
    )
    sql = bf.key_batch_sql(spec, "id", "bigint", first=True)
    assert sql.startswith("UPDATE orders AS o SET status_id = s.id FROM order_statuses AS s WHERE")
    assert "o.id <= CAST(CAST($1 AS text) AS bigint)" in sql


@pytest.mark.parametrize(
    ("pressure", "expected"),
    [
        (bf.Pressure(0, None, 0), None),
        (bf.Pressure(2, None, 0), None),
        (bf.Pressure(1, 9.9, 3), None),
        (bf.Pressure(1, 12.5, 0), "replica replay lag 12.5s > max-lag 10s"),
        (bf.Pressure(0, None, 4), "4 sessions wait for locks on t > max-lock-waiters 3"),
    ],
    ids=["no-replicas", "lag-unknown", "within-bounds", "lagging", "lock-waiters"],
)
def test_pressure_reason(pressure: bf.Pressure, expected: str | None) -> None:
    assert bf.pressure_reason(pressure, bf.BackfillOptions(), "t") == expected
