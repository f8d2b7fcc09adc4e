"""Batched backfills against a real PostgreSQL: batches, resume, throttling, modes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from structlog.testing import capture_logs

from bluegreen.errors import (
    BackfillError,
    BackfillInterruptedError,
    BackfillThrottledError,
)
from bluegreen.migrations import backfill as bf
from bluegreen.migrations.progress import BackfillProgress
from bluegreen.migrations.sql import parse_statements

pytestmark = pytest.mark.postgres


def spec(sql: str, migration: str = "0002_backfill", index: int = 0) -> bf.BackfillSpec:
    (stmt,) = parse_statements(sql)
    return bf.BackfillSpec.from_statement(stmt, migration, index)


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def make_orders(conn: asyncpg.Connection, rows: int) -> None:
    await conn.execute(
        """
        CREATE TABLE orders (
            id bigint PRIMARY KEY, status text, status_code text, touched int NOT NULL DEFAULT 0
        );
        INSERT INTO orders (id, status) SELECT g, 's' || (g % 7) FROM generate_series(1, $1) g;
        """.replace("$1", str(rows))
    )


def quiet(_: BackfillProgress) -> None:
    return None


SEED = (
    "-- bluegreen:backfill batch-size={size} pause=0\n"
    "UPDATE orders SET status_code = status WHERE status_code IS NULL"
)


async def test_key_mode_updates_every_row_and_forgets_its_progress(
    conn: asyncpg.Connection,
) -> None:
    await make_orders(conn, 2500)
    seen: list[BackfillProgress] = []
    with capture_logs() as logs:
        result = await bf.run_backfill(conn, spec(SEED.format(size=1000)), progress=seen.append)
    assert (result.rows, result.batches, result.rows_total) == (2500, 3, 2500)
    assert (result.mode, result.key, result.resumed_from) == ("key", "id", None)
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE status_code IS NULL") == 0
    assert await conn.fetchval("SELECT count(*) FROM bluegreen_backfill_progress") == 0
    assert [p.rows_done for p in seen] == [1000, 2000, 2500, 2500]
    assert [p.position for p in seen[:3]] == ["1000", "2000", "2500"]
    assert seen[-1].finished
    assert seen[-1].fraction == 1.0
    assert seen[1].fraction == pytest.approx(1999 / 2499)
    events = [e["event"] for e in logs]
    assert events[0] == "backfill_started"
    assert logs[0]["replication"] == "no replicas"
    assert events[-1] == "backfill_finished"


async def test_the_same_statement_runs_again_in_full_after_it_finished(
    conn: asyncpg.Connection,
) -> None:
    await make_orders(conn, 300)
    statement = spec("-- bluegreen:backfill batch-size=100 pause=0\nUPDATE orders SET touched = 1")
    await bf.run_backfill(conn, statement, progress=quiet)
    await conn.execute("UPDATE orders SET touched = 0")  # e.g. a down, then up again
    again = await bf.run_backfill(conn, statement, progress=quiet)
    assert again.rows == 300
    assert await conn.fetchval("SELECT min(touched) FROM orders") == 1


async def test_a_killed_runner_resumes_after_the_last_committed_batch(pg_dsn: str) -> None:
    setup = await asyncpg.connect(pg_dsn)
    await make_orders(setup, 3000)
    # Not idempotent on purpose: a redone batch would show as touched = 2.
    statement = spec(
        "-- bluegreen:backfill batch-size=100 pause=0\nUPDATE orders SET touched = touched + 1"
    )
    victim = await asyncpg.connect(pg_dsn)
    enough = asyncio.Event()

    def watch(p: BackfillProgress) -> None:
        if p.batches >= 5:
            enough.set()

    async def kill() -> None:
        await enough.wait()
        await setup.fetchval("SELECT pg_terminate_backend($1)", victim.get_server_pid())

    killer = asyncio.create_task(kill())
    with pytest.raises((BackfillError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await bf.run_backfill(victim, statement, progress=watch)
    await killer
    victim.terminate()

    saved = await setup.fetchrow(
        "SELECT last_key, rows_done, batches FROM bluegreen_backfill_progress"
    )
    last = int(saved["last_key"])
    assert 500 <= last < 3000
    assert saved["rows_done"] == last
    counts = await setup.fetch(
        "SELECT touched, min(id), max(id), count(*) FROM orders GROUP BY touched ORDER BY touched"
    )
    assert [tuple(r) for r in counts] == [(0, last + 1, 3000, 3000 - last), (1, 1, last, last)]

    fresh = await asyncpg.connect(pg_dsn)
    try:
        result = await bf.run_backfill(fresh, statement, progress=quiet)
    finally:
        await fresh.close()
    assert result.resumed_from == str(last)
    assert result.rows == 3000 - last
    assert result.rows_total == 3000
    assert await setup.fetchval("SELECT count(*) FROM orders WHERE touched <> 1") == 0
    await setup.close()


async def test_should_stop_interrupts_between_batches_and_a_rerun_resumes(
    conn: asyncpg.Connection,
) -> None:
    await make_orders(conn, 1000)
    statement = spec(
        "-- bluegreen:backfill batch-size=100 pause=0\nUPDATE orders SET touched = touched + 1"
    )
    batches: list[int] = []

    def record(p: BackfillProgress) -> None:
        batches.append(p.batches)

    with pytest.raises(
        BackfillInterruptedError, match="rerun the migration to resume after id 300"
    ):
        await bf.run_backfill(
            conn, statement, progress=record, should_stop=lambda: bool(batches) and batches[-1] >= 3
        )
    assert await conn.fetchval("SELECT sum(touched) FROM orders") == 300
    result = await bf.run_backfill(conn, statement, progress=quiet)
    assert (result.resumed_from, result.rows, result.rows_total) == ("300", 700, 1000)
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE touched <> 1") == 0


async def test_ctid_mode_walks_a_table_without_a_key(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE logs (a int, b text); "
        "INSERT INTO logs SELECT g, NULL FROM generate_series(1, 5000) g"
    )
    result = await bf.run_backfill(
        conn,
        spec(
            "-- bluegreen:backfill batch-size=500 pause=0\n"
            "UPDATE logs l SET b = a::text WHERE b IS NULL"
        ),
        progress=quiet,
    )
    assert result.mode == "ctid"
    assert result.key is None
    assert result.rows == 5000
    assert result.batches > 1
    assert await conn.fetchval("SELECT count(*) FROM logs WHERE b IS DISTINCT FROM a::text") == 0


async def test_ctid_mode_needs_a_where_clause(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE logs (a int, b text)")
    with pytest.raises(BackfillError, match="Give the UPDATE a WHERE clause"):
        await bf.run_backfill(
            conn, spec("-- bluegreen:backfill\nUPDATE logs SET b = 'x'"), progress=quiet
        )


async def test_key_option_walks_a_unique_uuid_column(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE events (id int, ref uuid NOT NULL UNIQUE, done bool);
        INSERT INTO events SELECT g, gen_random_uuid(), NULL FROM generate_series(1, 1500) g;
        """
    )
    result = await bf.run_backfill(
        conn,
        spec(
            "-- bluegreen:backfill key=ref batch-size=400 pause=0\n"
            "UPDATE events SET done = true WHERE done IS NULL"
        ),
        progress=quiet,
    )
    assert (result.mode, result.key, result.rows, result.batches) == ("key", "ref", 1500, 4)
    assert await conn.fetchval("SELECT count(*) FROM events WHERE done IS NULL") == 0


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("CREATE TABLE t (k int, v int); CREATE INDEX ON t (k)", "allows NULL"),
        ("CREATE TABLE t (k int NOT NULL, v int)", "no valid btree index starts with k"),
        ("CREATE TABLE t (v int)", "has no column 'k'"),
    ],
    ids=["nullable", "not-indexed", "missing"],
)
async def test_key_option_is_checked(conn: asyncpg.Connection, ddl: str, message: str) -> None:
    await conn.execute(ddl)
    with pytest.raises(BackfillError, match=message):
        await bf.run_backfill(
            conn, spec("-- bluegreen:backfill key=k\nUPDATE t SET v = 1"), progress=quiet
        )


async def test_missing_table_says_so(conn: asyncpg.Connection) -> None:
    with pytest.raises(BackfillError, match=r"0002_backfill\.sql:2: table nope does not exist"):
        await bf.run_backfill(
            conn, spec("-- bluegreen:backfill\nUPDATE nope SET a = 1"), progress=quiet
        )


async def test_a_connection_inside_a_transaction_is_refused(conn: asyncpg.Connection) -> None:
    await make_orders(conn, 10)
    async with conn.transaction():
        with pytest.raises(BackfillError, match="outside a transaction"):
            await bf.run_backfill(conn, spec(SEED.format(size=5)), progress=quiet)


async def test_partitioned_table_by_its_primary_key(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE m (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
        CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (1000);
        CREATE TABLE m2 PARTITION OF m FOR VALUES FROM (1000) TO (2000);
        INSERT INTO m SELECT g, NULL FROM generate_series(1, 1999) g;
        """
    )
    result = await bf.run_backfill(
        conn,
        spec("-- bluegreen:backfill batch-size=300 pause=0\nUPDATE m SET v = 'x' WHERE v IS NULL"),
        progress=quiet,
    )
    assert (result.mode, result.rows) == ("key", 1999)
    assert await conn.fetchval("SELECT count(*) FROM m WHERE v IS NULL") == 0


class Blocker:
    """A transaction holding row 1 of orders and a second session queued behind it."""

    def __init__(self, pg_dsn: str) -> None:
        self.dsn = pg_dsn

    async def __aenter__(self) -> Blocker:
        self.holder = await asyncpg.connect(self.dsn)
        await self.holder.execute("BEGIN")
        await self.holder.execute("UPDATE orders SET touched = touched WHERE id = 1")
        self.waiter = await asyncpg.connect(self.dsn)
        self.task = asyncio.create_task(
            self.waiter.execute("UPDATE orders SET touched = touched WHERE id = 1")
        )
        deadline = time.monotonic() + 10
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = $1"
        while await self.holder.fetchval(query, self.waiter.get_server_pid()) == 0:
            assert time.monotonic() < deadline, "the waiter never blocked"
            await asyncio.sleep(0.02)
        return self

    async def release(self) -> None:
        if not self.task.done():
            await self.holder.execute("ROLLBACK")
            await self.task

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
        await self.holder.close()
        await self.waiter.close()


async def test_lock_waiters_throttle_and_then_stop(pg_dsn: str, conn: asyncpg.Connection) -> None:
    await make_orders(conn, 200)
    seen: list[BackfillProgress] = []
    async with Blocker(pg_dsn):
        with pytest.raises(
            BackfillThrottledError, match="1 sessions wait for locks on orders > max-lock-waiters 0"
        ):
            await bf.run_backfill(
                conn,
                spec(
                    "-- bluegreen:backfill max-lock-waiters=0 max-throttle=300ms pause=0\n"
                    "UPDATE orders SET touched = 1"
                ),
                progress=seen.append,
            )
    assert seen
    assert all(p.throttled for p in seen)
    assert await conn.fetchval("SELECT sum(touched) FROM orders") == 0


async def test_lock_waiters_throttle_and_the_backfill_goes_on_once_they_clear(
    pg_dsn: str, conn: asyncpg.Connection
) -> None:
    await make_orders(conn, 200)
    async with Blocker(pg_dsn) as blocker:
        throttled = asyncio.Event()

        def notice(p: BackfillProgress) -> None:
            if p.throttled:
                throttled.set()

        async def release() -> None:
            await throttled.wait()
            await blocker.release()

        releaser = asyncio.create_task(release())
        with capture_logs() as logs:
            result = await bf.run_backfill(
                conn,
                spec(
                    "-- bluegreen:backfill max-lock-waiters=0 max-throttle=30s pause=0\n"
                    "UPDATE orders SET touched = 1"
                ),
                progress=notice,
            )
        await releaser
    assert result.rows == 200
    reasons = [e["reason"] for e in logs if e["event"] == "backfill_throttled"]
    assert reasons
    assert "max-lock-waiters 0" in reasons[0]


async def test_a_statement_timeout_halves_the_batch(conn: asyncpg.Connection) -> None:
    await make_orders(conn, 400)
    await conn.execute(
        """
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$;
        CREATE TRIGGER slow BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION slow();
        """
    )
    with capture_logs() as logs:
        result = await bf.run_backfill(
            conn,
            spec(
                "-- bluegreen:backfill batch-size=400 statement-timeout=250ms pause=0\n"
                "UPDATE orders SET touched = touched + 1"
            ),
            progress=quiet,
        )
    shrunk = [e["batch_size"] for e in logs if e["event"] == "backfill_batch_shrunk"]
    assert shrunk[:2] == [200, 100]
    assert result.rows == 400
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE touched <> 1") == 0


async def test_a_position_moved_by_another_process_stops_the_backfill(
    pg_dsn: str, conn: asyncpg.Connection
) -> None:
    await make_orders(conn, 500)
    other = await asyncpg.connect(pg_dsn)
    moved = asyncio.Event()

    def meddle(p: BackfillProgress) -> None:
        if p.batches == 1:
            moved.set()

    async def move() -> None:
        await moved.wait()
        await other.execute("UPDATE bluegreen_backfill_progress SET last_key = '400'")

    mover = asyncio.create_task(move())
    with pytest.raises(BackfillError, match="another process is running it"):
        await bf.run_backfill(
            conn,
            spec(
                "-- bluegreen:backfill batch-size=100 pause=200ms\n"
                "UPDATE orders SET touched = touched + 1"
            ),
            progress=meddle,
        )
    await mover
    await other.close()


async def interrupted_after(
    conn: asyncpg.Connection, statement: bf.BackfillSpec, batches: int
) -> None:
    done: list[int] = []
    with pytest.raises(BackfillInterruptedError):
        await bf.run_backfill(
            conn,
            statement,
            progress=lambda p: done.append(p.batches),
            should_stop=lambda: bool(done) and done[-1] >= batches,
        )


async def test_a_changed_statement_starts_over(conn: asyncpg.Connection) -> None:
    await make_orders(conn, 500)
    first = spec("-- bluegreen:backfill batch-size=100 pause=0\nUPDATE orders SET touched = 1")
    await interrupted_after(conn, first, 2)
    second = spec("-- bluegreen:backfill batch-size=100 pause=0\nUPDATE orders SET touched = 2")
    with capture_logs() as logs:
        result = await bf.run_backfill(conn, second, progress=quiet)
    assert result.resumed_from is None
    assert result.rows == 500
    assert any(e["event"] == "backfill_restarted" for e in logs)


async def test_a_column_dropped_and_added_again_starts_over(conn: asyncpg.Connection) -> None:
    await make_orders(conn, 500)
    statement = spec(SEED.format(size=100))
    await interrupted_after(conn, statement, 2)
    # a down of the expand migration and an up again: same statement, new column
    await conn.execute("ALTER TABLE orders DROP COLUMN status_code")
    await conn.execute("ALTER TABLE orders ADD COLUMN status_code text")
    result = await bf.run_backfill(conn, statement, progress=quiet)
    assert result.resumed_from is None
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE status_code IS NULL") == 0


async def test_load_and_clear_progress(conn: asyncpg.Connection) -> None:
    assert await bf.load_progress(conn) == []
    assert await bf.clear_progress(conn, "0002_backfill") == 0
    await make_orders(conn, 300)
    await interrupted_after(conn, spec(SEED.format(size=100)), 1)
    (record,) = await bf.load_progress(conn)
    assert (record.migration, record.table, record.mode, record.key) == (
        "0002_backfill",
        "orders",
        "key",
        "id",
    )
    assert (record.last_key, record.rows_done, record.batches) == ("100", 100, 1)
    assert await bf.clear_progress(conn, "0002_backfill") == 1
    assert await bf.load_progress(conn) == []


async def test_application_writes_go_on_during_the_backfill(
    pg_dsn: str, conn: asyncpg.Connection
) -> None:
    await make_orders(conn, 20_000)
    app = await asyncpg.connect(pg_dsn)
    stop = asyncio.Event()
    errors: list[BaseException] = []
    latencies: list[float] = []

    async def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                if n % 4 == 0:
                    await app.execute(
                        "INSERT INTO orders (id, status) VALUES ($1, 'new')", 1_000_000 + n
                    )
                else:
                    await app.execute(
                        "UPDATE orders SET status = 'paid' WHERE id = $1", (n * 7919) % 20_000 + 1
                    )
            except asyncpg.PostgresError as exc:
                errors.append(exc)
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.002)

    task = asyncio.create_task(writer())
    try:
        result = await bf.run_backfill(conn, spec(SEED.format(size=500)), progress=quiet)
    finally:
        stop.set()
        await task
        await app.close()
    assert errors == []
    assert len(latencies) > 10
    assert max(latencies) < 2.0
    assert result.rows >= 20_000
    left = await conn.fetchval(
        "SELECT count(*) FROM orders WHERE id <= 20000 AND status_code IS NULL"
    )
    assert left == 0
