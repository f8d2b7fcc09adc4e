"""Each generated set, applied by the real runner while old-code and new-code writers run.

The writers are asyncpg loops standing in for the two versions of an app: the
old one uses only the old schema, the new one only the new schema. They must
never get an error; a checker polls the invariant (old and new columns agree)
the whole time; the contract phase runs after the old writer stopped, as the
rollout controller would arrange it. Down sections are exercised too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from bluegreen.cli.migrate_new_cmd import lookup_column, write_set
from bluegreen.errors import MigrationError
from bluegreen.migrations import generators as g
from bluegreen.migrations import runner

pytestmark = pytest.mark.postgres

Op = Callable[[asyncpg.Connection, int], Awaitable[object]]


class Writer:
    """A loop of application writes on its own connection; records every error."""

    def __init__(self, dsn: str, name: str, op: Op) -> None:
        self.dsn, self.name, self.op = dsn, name, op
        self.errors: list[BaseException] = []
        self.done = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Writer:
        self._conn = await asyncpg.connect(self.dsn)
        self._stop.clear()
        self._task = asyncio.create_task(self._run())
        await self.progressed(3)
        return self

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                await self.op(self._conn, n)
            except asyncpg.PostgresError as exc:
                self.errors.append(exc)
            self.done += 1
            await asyncio.sleep(0.003)  # pacing: this is load, not synchronisation

    async def progressed(self, count: int) -> None:
        """Wait (up to 30 s) until ``count`` more operations have completed."""
        target, deadline = self.done + count, time.monotonic() + 30
        while self.done < target:
            assert time.monotonic() < deadline, f"{self.name} writer stalled"
            assert self._task is not None
            assert not self._task.done(), f"{self.name} writer died"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        await self._conn.close()


class Checker:
    """Polls a query that counts violations of an invariant; keeps the worst count seen."""

    def __init__(self, dsn: str, sql: str) -> None:
        self.dsn, self.sql = dsn, sql
        self.worst = 0
        self.polls = 0
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Checker:
        self._conn = await asyncpg.connect(self.dsn)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.worst = max(self.worst, await self._conn.fetchval(self.sql))
            self.polls += 1
            await asyncio.sleep(0.02)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self._task
        await self._conn.close()


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


def write(tmp_path: Path, request: g.Request) -> tuple[Path, list[int]]:
    directory = tmp_path / "migrations"
    generated = g.generate(request, existing=[], now=datetime.now(UTC))
    paths = write_set(directory, generated)
    return directory, [int(p.name.split("_", 1)[0]) for p in paths]


async def up(dsn: str, directory: Path, to: int) -> None:
    result = await runner.apply(dsn, directory, to=to)
    assert result.ok


async def down(dsn: str, directory: Path, to: int) -> None:
    result = await runner.rollback(dsn, directory, to=to)
    assert result.ok


async def columns(conn: asyncpg.Connection, table: str) -> dict[str, tuple[str, bool, str | None]]:
    rows = await conn.fetch(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
        """,
        table,
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


# --------------------------------------------------------------------------- rename-column


def old_orders_app(n: int) -> tuple[str, tuple[object, ...]]:
    match n % 3:
        case 0:
            return "INSERT INTO orders (status, note) VALUES ($1, 'old')", (f"old{n}",)
        case 1:
            return "UPDATE orders SET status = $1 WHERE id = $2", (f"old-u{n}", n * 7919 % 3000 + 1)
        case _:
            return "INSERT INTO orders (note) VALUES ($1)", ("old, status by default",)


def new_orders_app(n: int) -> tuple[str, tuple[object, ...]]:
    match n % 4:
        case 0:
            return "INSERT INTO orders (status_code, note) VALUES ($1, 'new')", (f"new{n}",)
        case 1:
            return "UPDATE orders SET status_code = $1 WHERE id = $2", (
                f"new-u{n}",
                n * 104729 % 3000 + 1,
            )
        case 2:
            return "INSERT INTO orders (note) VALUES ($1)", ("new, status_code by default",)
        case _:
            return "SELECT status_code FROM orders WHERE id = $1", (n % 3000 + 1,)


def op(make: Callable[[int], tuple[str, tuple[object, ...]]]) -> Op:
    async def run(conn: asyncpg.Connection, n: int) -> object:
        sql, args = make(n)
        return await conn.execute(sql, *args)

    return run


RENAME_OUT_OF_SYNC = (
    "SELECT count(*) FROM orders WHERE status_code IS NOT NULL "
    "AND status_code IS DISTINCT FROM status"
)


async def test_rename_column_with_old_and_new_writers(
    pg_dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(
        """
        CREATE TABLE orders (
            id bigserial PRIMARY KEY,
            status varchar(20) NOT NULL DEFAULT 'pending',
            note text
        );
        INSERT INTO orders (status) SELECT 's' || (g % 5) FROM generate_series(1, 10000) g;
        """
    )
    facts = await lookup_column(pg_dsn, "orders", "status")
    assert facts is not None
    assert (facts.type, facts.not_null) == ("character varying(20)", True)
    directory, versions = write(
        tmp_path,
        g.RenameColumn(
            "orders",
            "status",
            "status_code",
            facts.type,
            not_null=facts.not_null,
            default=facts.default,
            batch_size=250,
        ),
    )
    expand, _backfill, validate, contract = versions

    old = await Writer(pg_dsn, "old", op(old_orders_app)).start()
    await up(pg_dsn, directory, expand)
    new = await Writer(pg_dsn, "new", op(new_orders_app)).start()
    async with Checker(pg_dsn, RENAME_OUT_OF_SYNC) as checker:
        before = (old.done, new.done)
        await up(pg_dsn, directory, validate)
        # both versions kept writing while the 40 batches ran
        assert old.done - before[0] > 10
        assert new.done - before[1] > 10
        assert (
            await db.fetchval(
                "SELECT count(*) FROM orders WHERE status_code IS DISTINCT FROM status"
            )
            == 0
        )
        await old.progressed(20)
        await new.progressed(20)
    await old.stop()  # the old colour drained: contract may run
    await up(pg_dsn, directory, contract)
    await new.progressed(20)
    assert checker.polls > 3
    assert checker.worst == 0
    assert old.errors == []
    assert new.errors == []
    cols = await columns(db, "orders")
    assert "status" not in cols
    assert cols["status_code"] == ("character varying(20)", True, "'pending'::character varying")
    assert await db.fetchval("SELECT count(*) FROM orders WHERE status_code IS NULL") == 0
    assert (
        await db.fetchval(
            "SELECT count(*) FROM pg_constraint "
            "WHERE conrelid = 'orders'::regclass AND contype = 'c'"
        )
        == 0
    )

    # Roll the contract back while the new code runs, then bring the old code back.
    await down(pg_dsn, directory, validate)
    old = await Writer(pg_dsn, "old", op(old_orders_app)).start()
    async with Checker(pg_dsn, RENAME_OUT_OF_SYNC) as checker:
        await old.progressed(20)
        await new.progressed(20)
        assert (
            await db.fetchval(
                "SELECT count(*) FROM orders WHERE status IS DISTINCT FROM status_code"
            )
            == 0
        )
    await new.stop()  # the new colour drained: its column may go
    await down(pg_dsn, directory, 0)
    await old.progressed(20)
    await old.stop()
    assert checker.worst == 0
    assert old.errors == []
    assert new.errors == []
    cols = await columns(db, "orders")
    assert set(cols) == {"id", "status", "note"}
    assert await db.fetchval("SELECT count(*) FROM orders WHERE status IS NULL") == 0


# --------------------------------------------------------------------------- change-type


async def test_change_type_with_old_and_new_writers(
    pg_dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(
        """
        CREATE TABLE items (id serial PRIMARY KEY, amount integer NOT NULL, label text);
        INSERT INTO items (amount) SELECT g * 3 FROM generate_series(1, 10000) g;
        """
    )
    facts = await lookup_column(pg_dsn, "items", "amount")
    assert facts is not None
    directory, versions = write(
        tmp_path,
        g.ChangeType(
            "items", "amount", "bigint", facts.type, not_null=facts.not_null, batch_size=250
        ),
    )
    expand, _backfill, validate, contract = versions

    async def old_op(conn: asyncpg.Connection, n: int) -> object:
        if n % 2:
            return await conn.execute("INSERT INTO items (amount) VALUES ($1)", n)
        return await conn.execute("UPDATE items SET amount = $1 WHERE id = $2", n, n % 3000 + 1)

    async def new_op(conn: asyncpg.Connection, n: int) -> object:
        if n % 2:
            return await conn.execute("INSERT INTO items (amount_bigint) VALUES ($1)", 10 * n)
        return await conn.execute(
            "UPDATE items SET amount_bigint = $1 WHERE id = $2", 10 * n, n * 7 % 3000 + 1
        )

    out_of_sync = (
        "SELECT count(*) FROM items WHERE amount_bigint IS NOT NULL "
        "AND amount_bigint IS DISTINCT FROM amount::bigint"
    )
    old = await Writer(pg_dsn, "old", old_op).start()
    await up(pg_dsn, directory, expand)
    new = await Writer(pg_dsn, "new", new_op).start()
    async with Checker(pg_dsn, out_of_sync) as checker:
        await up(pg_dsn, directory, validate)
        assert (
            await db.fetchval(
                "SELECT count(*) FROM items WHERE amount_bigint IS DISTINCT FROM amount::bigint"
            )
            == 0
        )
        await old.progressed(20)
    await old.stop()
    await up(pg_dsn, directory, contract)
    await new.progressed(20)
    await new.stop()
    assert checker.worst == 0
    assert old.errors == []
    assert new.errors == []
    cols = await columns(db, "items")
    assert "amount" not in cols
    assert cols["amount_bigint"] == ("bigint", True, None)


# --------------------------------------------------------------------------- set-not-null


async def test_set_not_null_with_writers_that_set_the_column(
    pg_dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(
        """
        CREATE TABLE users (id serial PRIMARY KEY, email text, phone text);
        INSERT INTO users (email, phone)
        SELECT 'u' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE '555-' || g END
        FROM generate_series(1, 3000) g;
        """
    )
    directory, versions = write(tmp_path, g.SetNotNull("users", "phone", default="''"))
    expand, _backfill, _validate, contract = versions

    async def app(conn: asyncpg.Connection, n: int) -> object:
        if n % 2:
            return await conn.execute(
                "INSERT INTO users (email, phone) VALUES ($1, $2)", f"w{n}", f"555-{n}"
            )
        return await conn.execute("UPDATE users SET phone = $1 WHERE id = $2", f"1-{n}", n % 3000)

    async def relies_on_default(conn: asyncpg.Connection, n: int) -> object:
        return await conn.execute("INSERT INTO users (email) VALUES ($1)", f"d{n}")

    writer = await Writer(pg_dsn, "app", app).start()
    await up(pg_dsn, directory, expand)
    defaulted = await Writer(pg_dsn, "default", relies_on_default).start()
    # The precondition the expand file states: writing NULL now fails.
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("INSERT INTO users (email, phone) VALUES ('bad', NULL)")
    await up(pg_dsn, directory, contract)
    await writer.progressed(20)
    await defaulted.progressed(20)
    assert writer.errors == []
    assert defaulted.errors == []
    cols = await columns(db, "users")
    assert cols["phone"] == ("text", True, "''::text")
    assert (
        await db.fetchval(
            "SELECT count(*) FROM pg_constraint "
            "WHERE conrelid = 'users'::regclass AND contype = 'c'"
        )
        == 0
    )

    await defaulted.stop()  # it needs the default, which the down of expand drops
    await down(pg_dsn, directory, 0)
    await writer.progressed(20)
    await writer.stop()
    assert writer.errors == []
    assert (await columns(db, "users"))["phone"] == ("text", False, None)
    await db.execute("INSERT INTO users (email, phone) VALUES ('null ok again', NULL)")


# --------------------------------------------------------------------------- add-index


async def test_add_unique_index_concurrently_while_writing(
    pg_dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(
        """
        CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL, seen int DEFAULT 0);
        INSERT INTO users (email) SELECT 'u' || g || '@x' FROM generate_series(1, 20000) g;
        """
    )
    directory, (version,) = write(tmp_path, g.AddIndex("users", ("email",), unique=True))

    async def app(conn: asyncpg.Connection, n: int) -> object:
        if n % 2:
            return await conn.execute("INSERT INTO users (email) VALUES ($1)", f"w{n}@x")
        return await conn.execute("UPDATE users SET seen = seen + 1 WHERE id = $1", n % 20000 + 1)

    writer = await Writer(pg_dsn, "app", app).start()
    await up(pg_dsn, directory, version)
    await writer.progressed(10)
    valid = await db.fetchval(
        "SELECT indisvalid AND indisunique FROM pg_index "
        "WHERE indexrelid = 'users_email_key'::regclass"
    )
    assert valid is True
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute("INSERT INTO users (email) VALUES ('u1@x')")
    await down(pg_dsn, directory, 0)
    await writer.progressed(10)
    await writer.stop()
    assert writer.errors == []
    assert await db.fetchval("SELECT to_regclass('users_email_key')") is None


# --------------------------------------------------------------------------- drop-column


@pytest.mark.parametrize("typed", [False, True], ids=["irreversible", "with-type"])
async def test_drop_column_after_the_code_stopped_using_it(
    pg_dsn: str, db: asyncpg.Connection, tmp_path: Path, typed: bool
) -> None:
    await db.execute(
        """
        CREATE TABLE users (id serial PRIMARY KEY, email text, legacy text);
        INSERT INTO users (email, legacy) SELECT 'u' || g, 'x' FROM generate_series(1, 1000) g;
        """
    )
    directory, (version,) = write(
        tmp_path, g.DropColumn("users", "legacy", type="text" if typed else None)
    )

    async def app(conn: asyncpg.Connection, n: int) -> object:
        return await conn.execute("INSERT INTO users (email) VALUES ($1)", f"w{n}")

    writer = await Writer(pg_dsn, "new", app).start()
    await up(pg_dsn, directory, version)
    await writer.progressed(10)
    assert "legacy" not in await columns(db, "users")
    if typed:
        await down(pg_dsn, directory, 0)
        assert (await columns(db, "users"))["legacy"] == ("text", False, None)
    else:
        with pytest.raises(MigrationError, match="irreversible"):
            await runner.rollback(pg_dsn, directory, to=0)
    await writer.stop()
    assert writer.errors == []
