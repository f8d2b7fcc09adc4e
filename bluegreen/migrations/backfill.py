"""Batched, throttled, resumable backfills: the migrate phase's big UPDATEs, done safely.

Theory of operation
-------------------
A migration author writes the data move as the seed does, and marks it::

    -- bluegreen:backfill batch-size=5000 pause=20ms
    UPDATE orders SET status_code = status WHERE status_code IS NULL;

Run as one statement, that UPDATE holds a row lock on every row it changes
until it commits (application writes to those rows queue behind it), makes
one huge transaction (vacuum cannot clean up behind it, replicas fall behind)
and, if it fails at 90 %, starts again from zero. Here it runs as many short
transactions instead. The statement's parse tree (pglast) is rewritten, never
its text, into one of two batch forms:

*key* (default): batches are ranges of a key column — the table's single-column
    primary key, or ``key=COL`` (NOT NULL, first column of a valid btree index).
    A batch first finds its upper bound by walking the index::

        SELECT max(k), count(*) FROM (SELECT k FROM t WHERE k > $last AND k <= $end
                                      ORDER BY k LIMIT $batch) s

    then runs the UPDATE with ``AND k > $last AND k <= $upper`` added to its WHERE.
    ``$end`` is the largest key when the run starts: rows inserted later are
    written by code that already knows the new column (that is what the expand
    phase is for), so the walk ends.

*ctid* (tables without a usable key): batches are ranges of heap pages,
    ``ctid >= '(p,0)' AND ctid < '(p+n,0)'`` (a TID Range Scan, PostgreSQL 14+),
    up to the table's size when the run starts. A row an UPDATE moves to a later
    page can be visited twice, so this mode requires a WHERE clause and an
    idempotent statement (see below).

Each batch is its own transaction with ``SET LOCAL statement_timeout`` and
``lock_timeout``, and writes its progress to ``bluegreen_backfill_progress`` in
that same transaction (a compare-and-set on the previous position): a runner
killed at any moment resumes right after the last committed batch, never
redoing one and never skipping one. The saved position is only trusted for the
same statement on the same columns: it is fingerprinted with the statement,
the table's oid and the numbers of the key and SET columns (a column dropped
and added again by a down/up gets a new number), plus the table's file node in
ctid mode (VACUUM FULL moves every row). When the backfill finishes its row is
deleted, so running the statement again (after a down, say) walks the whole
table again; :func:`clear_progress` forgets an unfinished one.

Between batches it sleeps ``pause``. Before each batch it measures replication
lag (``pg_stat_replication.replay_lag``) and the sessions waiting for locks on
the table; inside each batch, just before commit, it counts the sessions its
own row locks are blocking. Above ``max-lag`` / ``max-lock-waiters`` it backs
off (doubling the pause, up to 5 s); a lock timeout or deadlock retries the
batch after the same back-off; a statement timeout halves the batch. When the
pressure lasts longer than ``max-throttle`` it stops with
:class:`BackfillThrottledError`; a rerun resumes.

Idempotency: write the UPDATE so that running it twice on a row equals running
it once, and so that its WHERE is false for rows already done (the seed's
``WHERE status_code IS NULL``). Then a rerun after a crash, a retried batch or a
second visit in ctid mode is harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal

import asyncpg
import pglast
import structlog
from pglast import ast
from pglast.enums import BoolExprType
from pglast.stream import RawStream

from bluegreen.errors import (
    BackfillError,
    BackfillInterruptedError,
    BackfillThrottledError,
    MigrationFileError,
)
from bluegreen.migrations.files import parse_duration
from bluegreen.migrations.generators import quote_ident
from bluegreen.migrations.progress import BackfillProgress, ProgressReporter
from bluegreen.migrations.sql import Statement

PROGRESS_TABLE: Final = "bluegreen_backfill_progress"
MAX_BACKOFF: Final = 5.0
MIN_BACKOFF: Final = 0.05
_INTEGER_TYPES: Final = frozenset({"smallint", "integer", "bigint"})
_log = structlog.get_logger("bluegreen.backfill")

Mode = Literal["key", "ctid"]


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    """The ``-- bluegreen:backfill`` arguments, with their defaults."""

    key: str | None = None
    batch_size: int = 1000
    pause: float = 0.01
    max_lag: float = 10.0
    max_lock_waiters: int = 3
    max_throttle: float = 300.0
    lock_timeout: float = 2.0
    statement_timeout: float = 30.0


_ARGUMENTS: Final = {
    "key": "COL, a NOT NULL column that leads a btree index (default: the primary key)",
    "batch-size": "N rows per batch, 1..1000000 (default 1000)",
    "pause": "DURATION between batches (default 10ms)",
    "max-lag": "DURATION of replica replay lag above which batches wait (default 10s)",
    "max-lock-waiters": "N sessions waiting on the table's locks above which batches wait "
    "(default 3)",
    "max-throttle": "DURATION of continuous waiting after which the backfill stops (default 5min)",
    "lock-timeout": "DURATION a batch waits for a row or table lock (default 2s)",
    "statement-timeout": "DURATION a batch may run; a timeout halves the batch (default 30s)",
}


def _duration_arg(name: str, value: str, fail: Callable[[str], MigrationFileError]) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise fail(f"{name}={value}: expected a duration like 20ms, 2s or 5min") from None
    return seconds


def _int_arg(
    name: str, value: str, low: int, high: int, fail: Callable[[str], MigrationFileError]
) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise fail(f"{name}={value}: expected a whole number from {low} to {high}")
    return number


def parse_options(args: str, fail: Callable[[str], MigrationFileError]) -> BackfillOptions:
    """``key=id batch-size=500 pause=20ms`` -> :class:`BackfillOptions`."""
    options = BackfillOptions()
    seen: set[str] = set()
    for token in args.split():
        name, sep, value = token.partition("=")
        name = name.lower()
        if name not in _ARGUMENTS:
            known = "; ".join(f"{k}={v}" for k, v in _ARGUMENTS.items())
            raise fail(f"unknown backfill argument {token!r}; known: {known}")
        if not sep or not value:
            raise fail(f"backfill argument {name!r} needs a value: {name}={_ARGUMENTS[name]}")
        if name in seen:
            raise fail(f"backfill argument {name!r} given twice")
        seen.add(name)
        match name:
            case "key":
                options = replace(options, key=_identifier(value, fail))
            case "batch-size":
                options = replace(options, batch_size=_int_arg(name, value, 1, 1_000_000, fail))
            case "max-lock-waiters":
                options = replace(options, max_lock_waiters=_int_arg(name, value, 0, 10_000, fail))
            case _:
                seconds = _duration_arg(name, value, fail)
                if name != "pause" and seconds <= 0:
                    raise fail(f"{name}={value}: must be more than 0")
                changes: dict[str, Any] = {name.replace("-", "_"): seconds}
                options = replace(options, **changes)
    return options


def _identifier(value: str, fail: Callable[[str], MigrationFileError]) -> str:
    """A column name as SQL reads it (``Id`` -> ``id``, ``"Id"`` -> ``Id``)."""
    try:
        statements = pglast.parse_sql(f"SELECT {value}")
    except pglast.parser.ParseError:
        statements = ()
    target: Any = None
    if len(statements) == 1 and isinstance(statements[0].stmt, ast.SelectStmt):
        targets: Any = statements[0].stmt.targetList
        if targets and len(targets) == 1 and not targets[0].name:
            target = targets[0].val
    fields: Any = getattr(target, "fields", None)
    if (
        not isinstance(target, ast.ColumnRef)
        or len(fields) != 1
        or not isinstance(fields[0], ast.String)
    ):
        raise fail(f"key={value}: expected a column name")
    return str(fields[0].sval)


def _walk(node: Any) -> list[Any]:
    found: list[Any] = []
    todo = [node]
    while todo:
        current = todo.pop()
        if isinstance(current, tuple | list):
            todo.extend(current)
        elif isinstance(current, ast.Node):
            found.append(current)
            todo.extend(getattr(current, slot) for slot in getattr(current, "__slots__", ()))
    return found


@dataclass(frozen=True, slots=True)
class BackfillSpec:
    """One ``-- bluegreen:backfill`` UPDATE of a migration, ready to run in batches.

    ``sql`` is the statement as PostgreSQL's parser reads it (re-rendered by
    pglast); ``table`` the target as written (``public.orders``); ``target`` the
    name its columns are qualified with (the alias, else the table name);
    ``source`` the ``file:line`` used in messages.
    """

    migration: str
    index: int
    source: str
    sql: str
    table: str
    target: str
    only: bool
    has_where: bool
    set_columns: tuple[str, ...]
    options: BackfillOptions

    @classmethod
    def from_statement(
        cls,
        stmt: Statement,
        migration_label: str,
        index: int,
        *,
        source: str | None = None,
    ) -> BackfillSpec:
        """Check a statement carrying ``-- bluegreen:backfill`` and read its arguments.

        ``index`` is the statement's position in its section; ``(migration_label,
        index)`` keys the saved progress. Raises :class:`MigrationFileError`
        (``file:line: ...``) when the statement is not a single-table UPDATE or an
        argument is bad.
        """
        where = source or f"{migration_label}.sql"
        directive = stmt.directive("backfill")
        directive_line = directive.line if directive is not None else stmt.line

        def fail(problem: str, line: int | None = None) -> MigrationFileError:
            return MigrationFileError(
                f"{where}:{line or stmt.line}: {problem}", migration=migration_label
            )

        node = stmt.node
        if not isinstance(node, ast.UpdateStmt):
            raise fail(
                f"'-- bluegreen:backfill' runs an UPDATE in batches; this statement is "
                f"{stmt.kind}. Put the directive on the line before an UPDATE.",
                directive_line,
            )
        if node.withClause is not None:
            raise fail(
                "a backfill UPDATE cannot have a WITH clause: each batch would run it again. "
                "Move the CTE into a subquery of FROM or WHERE."
            )
        if getattr(node, "returningClause", None) is not None or getattr(
            node, "returningList", None
        ):
            raise fail("a backfill UPDATE has nobody to return rows to; remove RETURNING")
        for child in _walk(node):
            if isinstance(child, ast.CurrentOfExpr):
                raise fail("WHERE CURRENT OF needs a cursor; a backfill has none")
            if isinstance(child, ast.ParamRef):
                raise fail("a migration cannot bind parameters ($1); write the values inline")
        options = parse_options(
            directive.args if directive is not None else "",
            lambda problem: fail(problem, directive_line),
        )
        relation: Any = node.relation
        targets: Any = node.targetList or ()
        set_columns = tuple(str(t.name) for t in targets)
        if options.key is not None and options.key in set_columns:
            raise fail(f"key={options.key}: a backfill cannot SET the key it walks by")
        alias: Any = relation.alias
        table = RawStream()(
            ast.RangeVar(schemaname=relation.schemaname, relname=relation.relname, inh=True)
        )
        return cls(
            migration=migration_label,
            index=index,
            source=f"{where}:{stmt.line}",
            sql=RawStream()(node),
            table=table,
            target=str(alias.aliasname) if alias is not None else str(relation.relname),
            only=not relation.inh,
            has_where=node.whereClause is not None,
            set_columns=set_columns,
            options=options,
        )

    @property
    def checksum(self) -> str:
        """SHA-256 of the statement: saved progress only applies to the same statement."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- batch SQL (pure)


def _with_condition(update_sql: str, condition: str) -> str:
    """The UPDATE with ``AND (condition)`` added to its WHERE, via the parse tree."""
    node: Any = pglast.parse_sql(update_sql)[0].stmt
    select: Any = pglast.parse_sql(f"SELECT WHERE {condition}")[0].stmt
    extra: Any = select.whereClause
    if node.whereClause is None:
        node.whereClause = extra
    else:
        node.whereClause = ast.BoolExpr(
            boolop=BoolExprType.AND_EXPR, args=(node.whereClause, extra)
        )
    return str(RawStream()(node))


def _key_value(param: int, key_type: str) -> str:
    # Keys travel as text (they are saved as text) and are cast back to the key's type.
    return f"CAST(CAST(${param} AS text) AS {key_type})"


def key_batch_sql(spec: BackfillSpec, key: str, key_type: str, *, first: bool) -> str:
    """The UPDATE of one key range: ``$1`` = last key done (absent on the first batch),
    then the batch's upper key."""
    column = f"{quote_ident(spec.target)}.{quote_ident(key)}"
    if first:
        condition = f"{column} <= {_key_value(1, key_type)}"
    else:
        condition = (
            f"{column} > {_key_value(1, key_type)} AND {column} <= {_key_value(2, key_type)}"
        )
    return _with_condition(spec.sql, condition)


def key_bound_sql(table: str, only: bool, key: str, key_type: str, *, first: bool) -> str:
    """Upper key and key count of the next batch (no row when the walk is done).

    Parameters: the last key done (not on the first batch), the end key, the batch size.
    """
    k = quote_ident(key)
    source = f"{'ONLY ' if only else ''}{table}"
    if first:
        where, size = f"{k} <= {_key_value(1, key_type)}", 2
    else:
        where = f"{k} > {_key_value(1, key_type)} AND {k} <= {_key_value(2, key_type)}"
        size = 3
    # The last key of the batch, and how many keys it holds (counted before the LIMIT 1).
    # No max(): uuid and other types have ordering but no max aggregate.
    return (
        f"SELECT s.k::text, count(*) OVER () FROM (SELECT {k} AS k FROM {source} "  # noqa: S608 - quoted identifiers only
        f"WHERE {where} ORDER BY {k} LIMIT ${size}) AS s ORDER BY s.k DESC LIMIT 1"
    )


def ctid_batch_sql(spec: BackfillSpec) -> str:
    """The UPDATE of one range of heap pages: ``$1`` first page, ``$2`` page after the last."""
    ctid = f"{quote_ident(spec.target)}.ctid"
    condition = (
        f"{ctid} >= CAST('(' || CAST($1 AS bigint) || ',0)' AS tid) "
        f"AND {ctid} < CAST('(' || CAST($2 AS bigint) || ',0)' AS tid)"
    )
    return _with_condition(spec.sql, condition)


# Sessions waiting for a lock on one of the relations: waiting on the relation
# itself, or on a row of it (they hold the row's tuple lock while they wait for
# the transaction that updated it).
LOCK_WAITERS_SQL: Final = """
SELECT count(DISTINCT w.pid)::int
FROM pg_locks w
WHERE NOT w.granted
  AND w.pid <> pg_backend_pid()
  AND (w.relation = ANY($1::oid[])
       OR EXISTS (SELECT 1 FROM pg_locks h
                  WHERE h.pid = w.pid AND h.granted AND h.locktype = 'tuple'
                    AND h.relation = ANY($1::oid[])))
"""

REPLICATION_SQL: Final = """
SELECT count(*)::int, max(EXTRACT(epoch FROM replay_lag))::float8
FROM pg_stat_replication
"""

PROGRESS_DDL: Final = f"""
CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (
    migration text NOT NULL,
    statement_index integer NOT NULL,
    table_name text NOT NULL,
    statement_checksum text NOT NULL,
    mode text NOT NULL,
    key_column text,
    last_key text,
    rows_done bigint NOT NULL DEFAULT 0,
    keys_scanned bigint NOT NULL DEFAULT 0,
    batches integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, statement_index)
)
"""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class BackfillResult:
    """What a run did: ``rows``/``batches``/``seconds`` of this run, ``rows_total``
    since the backfill first started, ``resumed_from`` the position it resumed
    after (None on a fresh start)."""

    rows: int
    batches: int
    seconds: float
    resumed_from: str | None
    rows_total: int
    mode: Mode
    key: str | None


@dataclass(frozen=True, slots=True)
class ProgressRecord:
    """One row of ``bluegreen_backfill_progress``: a backfill that has not finished.

    ``migration`` is the key its section saves progress under (the migration's
    label, ``<label>:down`` for a down section); ``statement_index`` the step
    number; ``last_key`` the key (or, in ctid mode, the heap page) the last
    committed batch ended at (None: no batch committed yet).
    """

    migration: str
    statement_index: int
    table: str
    mode: str
    key: str | None
    last_key: str | None
    rows_done: int
    batches: int
    started_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "migration": self.migration,
            "statement_index": self.statement_index,
            "table": self.table,
            "mode": self.mode,
            "key": self.key,
            "last_key": self.last_key,
            "rows_done": self.rows_done,
            "batches": self.batches,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True, slots=True)
class Pressure:
    """What the database looks like before a batch."""

    replicas: int
    lag_seconds: float | None
    lock_waiters: int


def pressure_reason(pressure: Pressure, options: BackfillOptions, table: str) -> str | None:
    """Why a batch should wait, or None."""
    if pressure.lag_seconds is not None and pressure.lag_seconds > options.max_lag:
        return f"replica replay lag {pressure.lag_seconds:.1f}s > max-lag {options.max_lag:g}s"
    if pressure.lock_waiters > options.max_lock_waiters:
        return (
            f"{pressure.lock_waiters} sessions wait for locks on {table} "
            f"> max-lock-waiters {options.max_lock_waiters}"
        )
    return None


def _describe_replication(pressure: Pressure) -> str:
    if not pressure.replicas:
        return "no replicas"
    if pressure.lag_seconds is None:
        # replay_lag is NULL for roles without pg_monitor, and for idle replicas
        return f"{pressure.replicas} replicas, lag unknown or none"
    return f"{pressure.replicas} replicas, lag {pressure.lag_seconds:.1f}s"


# --------------------------------------------------------------------------- database helpers


async def ensure_progress_table(conn: asyncpg.Connection) -> None:
    """Create ``bluegreen_backfill_progress`` if it does not exist."""
    await conn.execute(PROGRESS_DDL)


async def clear_progress(conn: asyncpg.Connection, migration: str) -> int:
    """Forget the saved progress of a migration's unfinished backfills; returns the count.

    For the runner to call before running a migration's down: a later up then
    starts its backfills from the beginning instead of resuming.
    """
    if await conn.fetchval("SELECT to_regclass($1)", PROGRESS_TABLE) is None:
        return 0
    status: str = await conn.execute(
        f"DELETE FROM {PROGRESS_TABLE} WHERE migration = $1",  # noqa: S608 - constant name
        migration,
    )
    return int(status.rsplit(" ", 1)[-1])


async def load_progress(conn: asyncpg.Connection) -> list[ProgressRecord]:
    """Every unfinished backfill's saved position (for ``migrate status``)."""
    if await conn.fetchval("SELECT to_regclass($1)", PROGRESS_TABLE) is None:
        return []
    rows = await conn.fetch(
        f"SELECT * FROM {PROGRESS_TABLE} ORDER BY migration, statement_index"  # noqa: S608 - constant name
    )
    return [
        ProgressRecord(
            migration=r["migration"],
            statement_index=r["statement_index"],
            table=r["table_name"],
            mode=r["mode"],
            key=r["key_column"],
            last_key=r["last_key"],
            rows_done=r["rows_done"],
            batches=r["batches"],
            started_at=r["started_at"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]


async def measure_pressure(conn: asyncpg.Connection, relids: list[int]) -> Pressure:
    """Replicas, their worst replay lag, and the sessions waiting on the relations' locks."""
    replicas, lag = await conn.fetchrow(REPLICATION_SQL)
    waiters = await conn.fetchval(LOCK_WAITERS_SQL, relids)
    return Pressure(replicas=replicas, lag_seconds=lag, lock_waiters=waiters)


@dataclass(frozen=True, slots=True)
class _Target:
    oid: int
    name: str  # regclass text: quoted, schema-qualified when not on the search_path
    relids: list[int]
    mode: Mode
    key: str | None
    key_type: str | None
    fingerprint: str = ""


async def _resolve_target(conn: asyncpg.Connection, spec: BackfillSpec) -> _Target:
    """Find the table and how to walk it, and fingerprint what the saved position means."""
    target = await _find_target(conn, spec)
    columns = sorted({*([target.key] if target.key else []), *spec.set_columns})
    numbers = await conn.fetch(
        "SELECT attname, attnum FROM pg_attribute WHERE attrelid = $1 "
        "AND attname = ANY($2::text[]) AND attnum > 0 AND NOT attisdropped ORDER BY attname",
        target.oid,
        columns,
    )
    filenode = None
    if target.mode == "ctid":
        filenode = await conn.fetchval("SELECT pg_relation_filenode($1::oid)", target.oid)
    parts = [
        spec.checksum,
        target.mode,
        target.key or "",
        str(target.oid),
        ",".join(f"{r['attname']}:{r['attnum']}" for r in numbers),
        str(filenode or ""),
    ]
    return replace(target, fingerprint=hashlib.sha256("|".join(parts).encode()).hexdigest())


async def _find_target(conn: asyncpg.Connection, spec: BackfillSpec) -> _Target:
    row = await conn.fetchrow(
        """
        SELECT c.oid, c.relkind::text AS relkind, c.oid::regclass::text AS name,
               EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid) AS has_children,
               (SELECT array_agg(relid::oid) FROM pg_partition_tree(c.oid)) AS partitions
        FROM pg_class c WHERE c.oid = to_regclass($1)
        """,
        spec.table,
    )
    if row is None:
        raise BackfillError(
            f"{spec.source}: table {spec.table} does not exist; run the expand migration first",
            migration=spec.migration,
        )
    if row["relkind"] not in ("r", "p"):
        raise BackfillError(
            f"{spec.source}: {spec.table} is not a table; a backfill updates a table",
            migration=spec.migration,
        )
    oid, name = row["oid"], row["name"]
    relids = list(row["partitions"] or [oid])
    key = spec.options.key
    if key is not None:
        column = await conn.fetchrow(
            """
            SELECT format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
                   EXISTS (SELECT 1 FROM pg_index i
                           JOIN pg_class ic ON ic.oid = i.indexrelid
                           JOIN pg_am am ON am.oid = ic.relam
                           WHERE i.indrelid = a.attrelid AND i.indkey[0] = a.attnum
                             AND am.amname = 'btree' AND i.indpred IS NULL AND i.indisvalid
                          ) AS indexed
            FROM pg_attribute a
            WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped
            """,
            oid,
            key,
        )
        if column is None:
            raise BackfillError(
                f"{spec.source}: key={key}: {name} has no column {key!r}", migration=spec.migration
            )
        if not column["attnotnull"]:
            raise BackfillError(
                f"{spec.source}: key={key}: the column allows NULL and rows with a NULL key "
                "would be skipped; pick a NOT NULL column",
                migration=spec.migration,
            )
        if not column["indexed"]:
            raise BackfillError(
                f"{spec.source}: key={key}: no valid btree index starts with {key}, so every "
                f"batch would scan the table. Create one (CREATE INDEX CONCURRENTLY) in an "
                "expand migration, or leave key= out to use the primary key",
                migration=spec.migration,
            )
        return _Target(oid, name, relids, "key", key, column["type"])
    pk = await conn.fetch(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = $1 AND i.indisprimary
        """,
        oid,
    )
    if len(pk) == 1:
        if pk[0]["attname"] in spec.set_columns:
            raise BackfillError(
                f"{spec.source}: the UPDATE sets the primary key {pk[0]['attname']}, which the "
                "batches walk by; name another indexed NOT NULL column with key=",
                migration=spec.migration,
            )
        return _Target(oid, name, relids, "key", pk[0]["attname"], pk[0]["type"])
    why = "a composite primary key" if pk else "no primary key"
    if row["relkind"] == "p" or (row["has_children"] and not spec.only):
        raise BackfillError(
            f"{spec.source}: {name} has {why} and child tables, so it cannot be walked by "
            "heap pages; name an indexed NOT NULL column with key=",
            migration=spec.migration,
        )
    if await conn.fetchval("SELECT current_setting('server_version_num')::int") < 140000:
        raise BackfillError(
            f"{spec.source}: {name} has {why}; walking it by heap pages needs PostgreSQL 14+ "
            "(TID range scans). Name an indexed NOT NULL column with key=",
            migration=spec.migration,
        )
    if not spec.has_where:
        raise BackfillError(
            f"{spec.source}: {name} has {why}, so the backfill walks heap pages, and a row an "
            "UPDATE moves to a later page can be visited twice. Give the UPDATE a WHERE clause "
            "that is false for rows already done (e.g. WHERE new_col IS NULL), or name an "
            "indexed NOT NULL column with key=",
            migration=spec.migration,
        )
    return _Target(oid, name, relids, "ctid", None, None)


# --------------------------------------------------------------------------- walking


@dataclass(slots=True)
class _Batch:
    rows: int
    position: str
    scanned: int
    waiters: int


class _ProgressMovedError(Exception):
    """The saved position changed under this run (another runner?)."""


class _Walker:
    """Runs one batch at a time from a saved position."""

    def __init__(self, conn: asyncpg.Connection, spec: BackfillSpec, target: _Target) -> None:
        self.conn = conn
        self.spec = spec
        self.target = target
        self.position: str | None = None

    async def prepare(self, position: str | None) -> None:
        """Read what the walk needs (end of the walk, size estimates) at the start of a run."""
        self.position = position

    def size(self) -> int:
        """The current batch size in this walker's unit (rows or pages)."""
        raise NotImplementedError

    def shrink(self) -> bool:
        """Halve the batch; False when it cannot get smaller."""
        raise NotImplementedError

    async def batch(self) -> _Batch | None:
        """Run the next batch inside the caller's transaction; None when the walk is done."""
        raise NotImplementedError

    def fraction(self, keys_scanned: int) -> float | None:
        """How much of the walk is done, 0..1."""
        raise NotImplementedError

    async def waiters(self) -> int:
        waiters: int = await self.conn.fetchval(LOCK_WAITERS_SQL, self.target.relids)
        return waiters


class _KeyWalker(_Walker):
    async def prepare(self, position: str | None) -> None:
        await super().prepare(position)
        t, k = self.target, quote_ident(self.target.key or "")
        source = f"{'ONLY ' if self.spec.only else ''}{t.name}"
        key_type = t.key_type or "text"
        self.numeric = key_type in _INTEGER_TYPES
        # ORDER BY ... LIMIT 1 walks the index for any type (min()/max() do not exist for uuid)
        # (the output column gets its own name: ORDER BY would otherwise sort the text)
        edge = f"SELECT {k}::text AS edge FROM {source} ORDER BY {k}"  # noqa: S608 - quoted
        self.end = await self.conn.fetchval(f"{edge} DESC LIMIT 1")
        self.low = await self.conn.fetchval(f"{edge} LIMIT 1") if self.numeric else None
        plan = await self.conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {source}")  # noqa: S608 - quoted identifiers
        self.estimate = int(json.loads(plan)[0]["Plan"]["Plan Rows"])
        self.batch_size = self.spec.options.batch_size
        key = t.key or ""
        self.sql_first = key_batch_sql(self.spec, key, key_type, first=True)
        self.sql_next = key_batch_sql(self.spec, key, key_type, first=False)
        self.bound_first = key_bound_sql(t.name, self.spec.only, key, key_type, first=True)
        self.bound_next = key_bound_sql(t.name, self.spec.only, key, key_type, first=False)

    def size(self) -> int:
        return self.batch_size

    def shrink(self) -> bool:
        if self.batch_size == 1:
            return False
        self.batch_size = max(1, self.batch_size // 2)
        return True

    async def batch(self) -> _Batch | None:
        if self.end is None:
            return None  # empty table
        if self.position is None:
            bound = await self.conn.fetchrow(self.bound_first, self.end, self.batch_size)
        else:
            bound = await self.conn.fetchrow(
                self.bound_next, self.position, self.end, self.batch_size
            )
        if bound is None:
            return None
        upper, count = bound
        if self.position is None:
            status = await self.conn.execute(self.sql_first, upper)
        else:
            status = await self.conn.execute(self.sql_next, self.position, upper)
        waiters = await self.waiters()
        return _Batch(int(status.rsplit(" ", 1)[-1]), upper, count, waiters)

    def fraction(self, keys_scanned: int) -> float | None:
        if self.end is None:
            return 1.0
        if self.numeric and self.low is not None:
            low, end = int(self.low), int(self.end)
            if self.position is None:
                return 0.0
            if end <= low:
                return 1.0
            return min(1.0, max(0.0, (int(self.position) - low) / (end - low)))
        return min(1.0, keys_scanned / max(self.estimate, keys_scanned, 1))


class _PageWalker(_Walker):
    async def prepare(self, position: str | None) -> None:
        await super().prepare(position)
        pages, reltuples, relpages = await self.conn.fetchrow(
            """
            SELECT ceil(pg_relation_size(c.oid)
                        / current_setting('block_size')::numeric)::bigint,
                   c.reltuples, c.relpages
            FROM pg_class c WHERE c.oid = $1
            """,
            self.target.oid,
        )
        self.end = int(pages)
        if reltuples > 0 and relpages > 0:
            per_page = reltuples / relpages
        else:
            plan = await self.conn.fetchval(
                f"EXPLAIN (FORMAT JSON) SELECT 1 FROM ONLY {self.target.name}"  # noqa: S608 - quoted identifiers
            )
            rows = json.loads(plan)[0]["Plan"]["Plan Rows"]
            per_page = rows / self.end if self.end else 100.0
        self.pages: int = max(1, round(self.spec.options.batch_size / max(per_page, 1.0)))
        self.sql = ctid_batch_sql(self.spec)

    def size(self) -> int:
        return self.pages

    def shrink(self) -> bool:
        if self.pages == 1:
            return False
        self.pages = max(1, self.pages // 2)
        return True

    async def batch(self) -> _Batch | None:
        start = int(self.position) if self.position is not None else 0
        if start >= self.end:
            return None
        stop = min(start + self.pages, self.end)
        status = await self.conn.execute(self.sql, start, stop)
        waiters = await self.waiters()
        return _Batch(int(status.rsplit(" ", 1)[-1]), str(stop), stop - start, waiters)

    def fraction(self, keys_scanned: int) -> float | None:
        if self.end == 0:
            return 1.0
        start = int(self.position) if self.position is not None else 0
        return min(1.0, start / self.end)


# --------------------------------------------------------------------------- running


async def _start(
    conn: asyncpg.Connection, spec: BackfillSpec, target: _Target
) -> tuple[str | None, int, int, int]:
    """Insert or load the progress row: (position, rows_done, keys_scanned, batches)."""
    checksum = target.fingerprint
    async with conn.transaction():
        await conn.execute(
            f"""
            INSERT INTO {PROGRESS_TABLE}
                (migration, statement_index, table_name, statement_checksum, mode, key_column)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (migration, statement_index) DO NOTHING
            """,  # noqa: S608 - constant name
            spec.migration,
            spec.index,
            target.name,
            checksum,
            target.mode,
            target.key,
        )
        row = await conn.fetchrow(
            f"SELECT * FROM {PROGRESS_TABLE} WHERE migration = $1 AND statement_index = $2 "  # noqa: S608 - constant name
            "FOR UPDATE",
            spec.migration,
            spec.index,
        )
        if row["statement_checksum"] != checksum:
            # Another statement, key or column now: the saved position means
            # nothing for it. Backfills are idempotent, so starting over is safe.
            _log.warning(
                "backfill_restarted",
                migration=spec.migration,
                statement_index=spec.index,
                reason="the statement, its table, key or columns changed since the saved progress",
            )
            await conn.execute(
                f"""
                UPDATE {PROGRESS_TABLE}
                SET statement_checksum = $3, table_name = $4, mode = $5, key_column = $6,
                    last_key = NULL, rows_done = 0, keys_scanned = 0, batches = 0,
                    started_at = now(), updated_at = now()
                WHERE migration = $1 AND statement_index = $2
                """,  # noqa: S608 - constant name
                spec.migration,
                spec.index,
                checksum,
                target.name,
                target.mode,
                target.key,
            )
            return None, 0, 0, 0
    return row["last_key"], row["rows_done"], row["keys_scanned"], row["batches"]


_SAVE_SQL: Final = f"""
UPDATE {PROGRESS_TABLE}
SET last_key = $3, rows_done = rows_done + $4, keys_scanned = keys_scanned + $5,
    batches = batches + 1, updated_at = now()
WHERE migration = $1 AND statement_index = $2 AND last_key IS NOT DISTINCT FROM $6
"""  # noqa: S608 - constant name

_FINISH_SQL: Final = f"""
DELETE FROM {PROGRESS_TABLE} WHERE migration = $1 AND statement_index = $2
"""  # noqa: S608 - constant name


class _Sleeper:
    """Sleeps in short slices so a stop request is seen within 100 ms."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    async def __call__(self, seconds: float) -> bool:
        """Sleep; True if asked to stop meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            if self.should_stop():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, 0.1))


async def run_backfill(
    conn: asyncpg.Connection,
    spec: BackfillSpec,
    *,
    progress: Callable[[BackfillProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BackfillResult:
    """Run ``spec`` in batches on ``conn`` (which must not be inside a transaction).

    Resumes after the last batch a previous run committed. ``progress`` gets a
    :class:`BackfillProgress` after every batch and while waiting (default: a
    bar on a terminal, log lines elsewhere). ``should_stop`` is polled between
    batches and while sleeping; when it returns True the run stops with
    :class:`BackfillInterruptedError` (progress saved). Raises
    :class:`BackfillThrottledError` when lag or lock waits stay too high for
    ``max-throttle``, :class:`BackfillError` for anything else.
    """
    if conn.is_in_transaction():
        raise BackfillError(
            f"{spec.source}: run_backfill needs a connection outside a transaction: each "
            "batch commits on its own",
            migration=spec.migration,
        )
    reporter = progress if progress is not None else ProgressReporter()
    stop = should_stop if should_stop is not None else (lambda: False)
    sleep = _Sleeper(stop)
    options = spec.options
    try:
        await ensure_progress_table(conn)
        target = await _resolve_target(conn, spec)
        position, rows_before, scanned_before, batches_before = await _start(conn, spec, target)
    except asyncpg.PostgresError as exc:
        raise BackfillError(
            f"{spec.source}: cannot start the backfill of {spec.table}: {exc}",
            migration=spec.migration,
        ) from exc
    walker: _Walker = (
        _KeyWalker(conn, spec, target) if target.mode == "key" else _PageWalker(conn, spec, target)
    )
    await walker.prepare(position)
    first_pressure = await measure_pressure(conn, target.relids)
    _log.info(
        "backfill_started",
        migration=spec.migration,
        statement_index=spec.index,
        table=target.name,
        mode=target.mode,
        key=target.key,
        batch_size=walker.size(),
        resumed_from=position,
        rows_done=rows_before,
        replication=_describe_replication(first_pressure),
    )

    started = time.monotonic()
    rows, batches, scanned = 0, 0, 0
    start_fraction = walker.fraction(scanned_before) or 0.0
    backoff = max(options.pause, MIN_BACKOFF)
    throttled_since: float | None = None
    last_reason: str | None = None

    def snapshot(throttled: str | None = None, *, done: bool = False) -> BackfillProgress:
        elapsed = time.monotonic() - started
        fraction = 1.0 if done else walker.fraction(scanned_before + scanned)
        eta = None
        if fraction is not None and elapsed > 0 and fraction > start_fraction:
            speed = (fraction - start_fraction) / elapsed
            eta = (1.0 - fraction) / speed
        return BackfillProgress(
            migration=spec.migration,
            statement_index=spec.index,
            table=target.name,
            rows_done=rows_before + rows,
            batches=batches_before + batches,
            elapsed=elapsed,
            rows_per_second=rows / elapsed if elapsed > 0 else 0.0,
            fraction=fraction,
            eta_seconds=0.0 if done else eta,
            position=walker.position,
            throttled=throttled,
            finished=done,
        )

    async def wait(reason: str) -> None:
        """Back off for one step; stop for good when the pressure lasts too long."""
        nonlocal throttled_since, last_reason, backoff
        now = time.monotonic()
        throttled_since = throttled_since if throttled_since is not None else now
        if reason != last_reason:
            _log.warning("backfill_throttled", migration=spec.migration, reason=reason)
            last_reason = reason
        if now - throttled_since > options.max_throttle:
            raise BackfillThrottledError(
                f"{spec.source}: backfill of {target.name} stopped after waiting "
                f"{now - throttled_since:.0f}s (max-throttle): {reason}. Progress is saved "
                f"after {target.key or 'page'} {walker.position}; rerun the migration to "
                "resume once the database is calmer, or raise the bound in the directive",
                migration=spec.migration,
            )
        reporter(snapshot(reason))
        if await sleep(backoff):
            raise_interrupted()
        backoff = min(backoff * 2, MAX_BACKOFF)

    def raise_interrupted() -> None:
        raise BackfillInterruptedError(
            f"{spec.source}: backfill of {target.name} stopped on request after "
            f"{batches_before + batches} batches ({rows_before + rows} rows); rerun the "
            f"migration to resume after {target.key or 'page'} {walker.position}",
            migration=spec.migration,
        )

    statement_timeout = f"{round(options.statement_timeout * 1000)}ms"
    lock_timeout = f"{round(options.lock_timeout * 1000)}ms"
    try:
        while True:
            if stop():
                raise_interrupted()
            pressure = await measure_pressure(conn, target.relids)
            reason = pressure_reason(pressure, options, target.name)
            if reason is not None:
                await wait(reason)
                continue
            previous = walker.position
            try:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT set_config('statement_timeout', $1, true), "
                        "set_config('lock_timeout', $2, true)",
                        statement_timeout,
                        lock_timeout,
                    )
                    outcome = await walker.batch()
                    if outcome is not None:
                        saved = await conn.execute(
                            _SAVE_SQL,
                            spec.migration,
                            spec.index,
                            outcome.position,
                            outcome.rows,
                            outcome.scanned,
                            previous,
                        )
                        if saved != "UPDATE 1":
                            raise _ProgressMovedError
            except asyncpg.QueryCanceledError:
                if not walker.shrink():
                    raise BackfillError(
                        f"{spec.source}: a batch of one {'row' if target.mode == 'key' else 'page'}"
                        f" of {target.name} ran past statement-timeout "
                        f"({options.statement_timeout:g}s) after {target.key or 'page'} "
                        f"{previous}; raise statement-timeout in the directive, or look for "
                        "a slow trigger or subquery",
                        migration=spec.migration,
                    ) from None
                _log.warning(
                    "backfill_batch_shrunk",
                    migration=spec.migration,
                    batch_size=walker.size(),
                    reason="statement timeout",
                )
                continue
            except (
                asyncpg.LockNotAvailableError,
                asyncpg.DeadlockDetectedError,
                asyncpg.SerializationError,
            ) as exc:
                await wait(f"{type(exc).__name__} ({exc.sqlstate}) on {target.name}")
                continue
            except _ProgressMovedError:
                raise BackfillError(
                    f"{spec.source}: the saved position of this backfill moved while it ran: "
                    "another process is running it. Let that one finish",
                    migration=spec.migration,
                ) from None
            if outcome is None:
                break
            walker.position = outcome.position
            rows += outcome.rows
            scanned += outcome.scanned
            batches += 1
            if outcome.waiters > options.max_lock_waiters:
                await wait(
                    f"the last batch blocked {outcome.waiters} sessions "
                    f"> max-lock-waiters {options.max_lock_waiters}"
                )
                continue
            throttled_since, last_reason = None, None
            backoff = max(options.pause, MIN_BACKOFF)
            reporter(snapshot())
            if options.pause > 0 and await sleep(options.pause):
                raise_interrupted()
        await conn.execute(_FINISH_SQL, spec.migration, spec.index)
    except BaseException as exc:
        close = getattr(reporter, "close", None)
        if callable(close):
            close()  # end a half-drawn progress bar before the error is printed
        if isinstance(exc, asyncpg.PostgresError):
            raise BackfillError(
                f"{spec.source}: backfill of {target.name} failed after "
                f"{target.key or 'page'} {walker.position}: {exc}. Progress up to there is "
                "saved; fix the cause and rerun the migration to resume",
                migration=spec.migration,
            ) from exc
        raise
    seconds = time.monotonic() - started
    reporter(snapshot(done=True))
    _log.info(
        "backfill_finished",
        migration=spec.migration,
        statement_index=spec.index,
        table=target.name,
        rows=rows,
        rows_total=rows_before + rows,
        batches=batches,
        seconds=round(seconds, 3),
    )
    return BackfillResult(
        rows, batches, seconds, position, rows_before + rows, target.mode, target.key
    )
