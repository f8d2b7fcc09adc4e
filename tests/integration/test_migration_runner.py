"""The migration runner against a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bluegreen.errors import (
    ChecksumMismatchError,
    HazardError,
    MigrationError,
    MigrationLockTimeoutError,
    MigrationOrderError,
    MigrationStatementError,
    RunnerLockError,
    UsageError,
)
from bluegreen.migrations import runner
from bluegreen.migrations.events import (
    InvalidIndexDropped,
    LockRetry,
    MigrationFinished,
    MigrationStarted,
    ServerNotice,
    StatementStarted,
    StepSkipped,
)
from bluegreen.migrations.locking import RUNNER_LOCK_KEY
from bluegreen.migrations.metrics import MIGRATION_REGISTRY
from bluegreen.migrations.plan import Direction, MigrationState
from bluegreen.migrations.runner import RunOptions
from bluegreen.migrations.schema import check_schema
from tests.integration.migration_support import (
    eventually,
    fetchval,
    history,
    waiting_on_lock,
    write_migration,
)

pytestmark = pytest.mark.postgres

FAST = RunOptions(lock_timeout=0.5, lock_retries=3, retry_base=0.1, retry_cap=0.3, lock_wait=5)


class Events(list[Any]):
    """An on_event callback that keeps every event."""

    def __call__(self, event: Any) -> None:
        self.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self if isinstance(e, kind)]


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def states(dsn: str, directory: Path) -> dict[int, str]:
    return {s.version: s.state.value for s in await runner.status(dsn, directory)}


# --------------------------------------------------------------------------- basics


async def test_apply_records_who_when_and_how_long(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(
        tmp_path,
        "0001_create_orders.sql",
        "expand",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, status text);",
        "DROP TABLE orders;",
    )
    write_migration(
        tmp_path,
        "0002_add_status_code.sql",
        "expand",
        "ALTER TABLE orders ADD COLUMN status_code varchar(20);",
        "ALTER TABLE orders DROP COLUMN status_code;",
    )
    result = await runner.apply(pg_dsn, tmp_path)
    assert result.ok
    assert [(r.label, r.outcome.value) for r in result.runs] == [
        ("0001_create_orders", "applied"),
        ("0002_add_status_code", "applied"),
    ]
    assert result.current_version == 2
    rows = await history(pg_dsn)
    assert [(r["version"], r["direction"], r["outcome"]) for r in rows] == [
        (1, "up", "applied"),
        (2, "up", "applied"),
    ]
    first = rows[0]
    assert first["name"] == "create_orders"
    assert first["phase"] == "expand"
    assert len(first["checksum"]) == 64
    assert "@" in first["run_by"]
    assert first["runner_pid"] > 0
    assert first["backend_pid"] > 0
    assert first["tool_version"]
    assert first["finished_at"] >= first["started_at"]
    assert first["duration_seconds"] >= 0
    assert (first["steps_total"], first["steps_done"]) == (1, 1)
    assert first["error"] is None
    assert await states(pg_dsn, tmp_path) == {1: "applied", 2: "applied"}
    again = await runner.apply(pg_dsn, tmp_path)
    assert again.runs == ()


async def test_status_is_read_only(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_a.sql", "expand", "CREATE TABLE a (id int);")
    statuses = await runner.status(pg_dsn, tmp_path)
    assert [(s.version, s.state) for s in statuses] == [(1, MigrationState.PENDING)]
    assert await fetchval(pg_dsn, "SELECT to_regclass('bluegreen_migrations')") is None
    assert await runner.verify(pg_dsn, tmp_path) == []


async def test_up_to_a_version_and_by_phase(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_expand.sql", "expand", "CREATE TABLE t (a int, b int);")
    write_migration(
        tmp_path,
        "0002_migrate.sql",
        "migrate",
        "-- bluegreen:backfill\nUPDATE t SET b = a WHERE b IS NULL;",
    )
    write_migration(
        tmp_path,
        "0003_contract.sql",
        "contract",
        "ALTER TABLE t DROP COLUMN a;",
        irreversible="the column's data is gone",
    )
    await runner.apply(pg_dsn, tmp_path, to=1)
    assert await states(pg_dsn, tmp_path) == {1: "applied", 2: "pending", 3: "pending"}
    with pytest.raises(MigrationOrderError, match="would leave 0002_migrate \\(migrate\\) behind"):
        await runner.apply(pg_dsn, tmp_path, phases=["contract"])
    result = await runner.apply(pg_dsn, tmp_path, phases=["migrate"])
    assert [r.label for r in result.runs] == ["0002_migrate"]
    assert await states(pg_dsn, tmp_path) == {1: "applied", 2: "applied", 3: "pending"}
    await runner.apply(pg_dsn, tmp_path, phases=["contract"], allow_hazards=["ban-drop-column"])
    assert await states(pg_dsn, tmp_path) == {1: "applied", 2: "applied", 3: "applied"}


async def test_checksum_mismatch_is_refused_and_verified(pg_dsn: str, tmp_path: Path) -> None:
    path = write_migration(tmp_path, "0001_a.sql", "expand", "CREATE TABLE a (id int);")
    await runner.apply(pg_dsn, tmp_path)
    path.write_text(path.read_text().replace("(id int)", "(id bigint)"))
    with pytest.raises(ChecksumMismatchError, match=r"0001_a\.sql: changed after it was applied"):
        await runner.apply(pg_dsn, tmp_path)
    (problem,) = await runner.verify(pg_dsn, tmp_path)
    assert (problem.kind, problem.severity.value) == ("checksum_mismatch", "error")


async def test_verify_reports_unparsable_sql(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_a.sql", "expand", "CREATE TABLE a (id int);", "DROP TABL a;")
    write_migration(
        tmp_path, "0002_b.sql", "migrate", "-- bluegreen:backfill\nDELETE FROM a WHERE id < 0;"
    )
    found = await runner.verify(pg_dsn, tmp_path)
    assert [(p.kind, p.label) for p in found] == [
        ("invalid_sql", "0001_a"),
        ("invalid_sql", "0002_b"),
    ]
    assert "0001_a.sql:5: SQL syntax error" in found[0].message
    assert "0002_b.sql:3: '-- bluegreen:backfill' runs an UPDATE" in found[1].message


async def test_out_of_order_file_is_reported_and_needs_a_flag(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0002_b.sql", "expand", "CREATE TABLE b (id int);")
    await runner.apply(pg_dsn, tmp_path)
    write_migration(tmp_path, "0001_a.sql", "expand", "CREATE TABLE a (id int);")
    (problem,) = await runner.verify(pg_dsn, tmp_path)
    assert problem.kind == "out_of_order"
    with pytest.raises(MigrationOrderError, match="0001_a \\(expand\\) is older"):
        await runner.apply(pg_dsn, tmp_path)
    result = await runner.apply(pg_dsn, tmp_path, allow_out_of_order=True)
    assert [r.label for r in result.runs] == ["0001_a"]


async def test_down_runs_newest_first_and_keeps_history(pg_dsn: str, tmp_path: Path) -> None:
    for v in (1, 2, 3):
        write_migration(
            tmp_path,
            f"000{v}_t{v}.sql",
            "expand",
            f"CREATE TABLE t{v} (id int);",
            f"DROP TABLE t{v};",
        )
    await runner.apply(pg_dsn, tmp_path)
    events = Events()
    result = await runner.rollback(pg_dsn, tmp_path, to=1, on_event=events)
    assert [(r.label, r.outcome.value) for r in result.runs] == [
        ("0003_t3", "rolled_back"),
        ("0002_t2", "rolled_back"),
    ]
    assert [e.label for e in events.of(MigrationFinished)] == ["0003_t3", "0002_t2"]
    assert result.current_version == 1
    assert await states(pg_dsn, tmp_path) == {1: "applied", 2: "pending", 3: "pending"}
    assert await fetchval(pg_dsn, "SELECT to_regclass('t2')") is None
    rows = await history(pg_dsn)
    assert [(r["version"], r["direction"], r["outcome"]) for r in rows[3:]] == [
        (3, "down", "rolled_back"),
        (2, "down", "rolled_back"),
    ]
    newest = await runner.rollback(pg_dsn, tmp_path)
    assert [r.label for r in newest.runs] == ["0001_t1"]
    reapplied = await runner.apply(pg_dsn, tmp_path)
    assert [r.label for r in reapplied.runs] == ["0001_t1", "0002_t2", "0003_t3"]


async def test_down_refuses_an_irreversible_migration(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_a.sql", "expand", "CREATE TABLE a (id int);", "DROP TABLE a;")
    write_migration(
        tmp_path,
        "0002_seed.sql",
        "migrate",
        "INSERT INTO a VALUES (1);",
        irreversible="reference data",
    )
    write_migration(tmp_path, "0003_b.sql", "expand", "CREATE TABLE b (id int);", "DROP TABLE b;")
    await runner.apply(pg_dsn, tmp_path)
    with pytest.raises(MigrationError, match="cannot roll back 0002_seed: it is irreversible"):
        await runner.rollback(pg_dsn, tmp_path, to=0)
    # nothing ran: b still exists, every migration still applied
    assert await fetchval(pg_dsn, "SELECT to_regclass('b') IS NOT NULL")
    assert await states(pg_dsn, tmp_path) == {1: "applied", 2: "applied", 3: "applied"}
    result = await runner.rollback(pg_dsn, tmp_path, to=2)
    assert [r.label for r in result.runs] == ["0003_b"]


# --------------------------------------------------------------------------- failures


async def test_failed_transaction_group_leaves_nothing_behind(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(
        tmp_path,
        "0001_broken.sql",
        "expand",
        "CREATE TABLE a (id int);\nCREATE TABLE a (id int);",
    )
    events = Events()
    result = await runner.apply(pg_dsn, tmp_path, on_event=events, raise_on_failure=False)
    assert not result.ok
    assert isinstance(result.error, MigrationStatementError)
    assert result.error.sqlstate == "42P07"
    assert "0001_broken.sql:4: 0001_broken (CREATE TABLE a (id int)) failed" in str(result.error)
    (run,) = result.runs
    assert (run.outcome.value, run.steps_done, run.sqlstate) == ("failed", 0, "42P07")
    assert await fetchval(pg_dsn, "SELECT to_regclass('a')") is None
    assert [e.statement.line for e in events.of(StatementStarted)] == [3, 4]
    (row,) = await history(pg_dsn)
    assert row["outcome"] == "failed"
    assert row["steps_done"] == 0
    assert "42P07" in row["error"]
    assert row["duration_seconds"] is not None
    with pytest.raises(MigrationStatementError):
        await runner.apply(pg_dsn, tmp_path)


async def test_partial_non_transactional_run_is_reported_and_resumed(
    pg_dsn: str, tmp_path: Path
) -> None:
    await execute(pg_dsn, "CREATE TABLE items (id int, qty int); INSERT INTO items VALUES (1, -1);")
    write_migration(
        tmp_path,
        "0001_constrain.sql",
        "expand",
        "CREATE TABLE audit (id int);\n"
        "CREATE INDEX CONCURRENTLY items_qty_idx ON items (qty);\n"
        "ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0) NOT VALID;\n"
        "ALTER TABLE items VALIDATE CONSTRAINT qty_positive;",
        "ALTER TABLE items DROP CONSTRAINT qty_positive;\n"
        "DROP INDEX CONCURRENTLY items_qty_idx;\nDROP TABLE audit;",
    )
    result = await runner.apply(
        pg_dsn,
        tmp_path,
        raise_on_failure=False,
        allow_hazards=["require-validate-in-separate-transaction"],
    )
    assert isinstance(result.error, MigrationStatementError)
    assert result.error.sqlstate == "23514"
    (run,) = result.runs
    assert (run.steps_total, run.steps_done) == (3, 2)
    (problem,) = await runner.verify(pg_dsn, tmp_path)
    assert problem.kind == "failed"
    assert "steps 1-2 of 3 committed; step 3 failed" in problem.message
    await execute(pg_dsn, "UPDATE items SET qty = 1")
    events = Events()
    result = await runner.apply(
        pg_dsn,
        tmp_path,
        on_event=events,
        allow_hazards=["require-validate-in-separate-transaction"],
    )
    (run,) = result.runs
    assert (run.outcome.value, run.resumed_from) == ("applied", 2)
    assert [e.step.number for e in events.of(StepSkipped)] == [1, 2]
    rows = await history(pg_dsn)
    assert [(r["outcome"], r["steps_done"]) for r in rows] == [("failed", 2), ("applied", 3)]


async def test_failing_concurrent_index_is_dropped_and_rerun_succeeds(
    pg_dsn: str, tmp_path: Path
) -> None:
    await execute(
        pg_dsn,
        "CREATE TABLE users (id int, email text);"
        "INSERT INTO users VALUES (1, 'a@x'), (2, 'a@x'), (3, 'b@x');",
    )
    write_migration(
        tmp_path,
        "0001_unique_email.sql",
        "expand",
        "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);",
        "DROP INDEX CONCURRENTLY IF EXISTS users_email_key;",
    )
    events = Events()
    with pytest.raises(MigrationStatementError) as info:
        await runner.apply(pg_dsn, tmp_path, on_event=events)
    assert info.value.sqlstate == "23505"
    assert "0001_unique_email.sql:3" in str(info.value)
    (dropped,) = events.of(InvalidIndexDropped)
    assert dropped.index == "public.users_email_key"
    assert "after the failed build" in dropped.describe()
    assert await fetchval(pg_dsn, "SELECT to_regclass('users_email_key')") is None
    (row,) = await history(pg_dsn)
    assert (row["outcome"], row["steps_done"]) == ("failed", 0)

    await execute(pg_dsn, "DELETE FROM users WHERE id = 2")
    result = await runner.apply(pg_dsn, tmp_path)
    assert result.runs[0].outcome.value == "applied"
    valid = await fetchval(
        pg_dsn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_email_key'::regclass"
    )
    assert valid is True


async def test_invalid_index_left_behind_is_dropped_before_running(
    pg_dsn: str, tmp_path: Path
) -> None:
    await execute(
        pg_dsn,
        "CREATE TABLE users (id int, email text); INSERT INTO users VALUES (1, 'a'), (2, 'a');",
    )
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email)")
        await conn.execute("DELETE FROM users WHERE id = 2")
    finally:
        await conn.close()
    # IF NOT EXISTS alone would skip the INVALID leftover and leave it unusable
    write_migration(
        tmp_path,
        "0001_unique_email.sql",
        "expand",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON users (email);",
    )
    events = Events()
    await runner.apply(pg_dsn, tmp_path, on_event=events)
    (dropped,) = events.of(InvalidIndexDropped)
    assert dropped.when == "before running the statement"
    valid = await fetchval(
        pg_dsn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_email_key'::regclass"
    )
    assert valid is True


async def test_enum_value_used_in_the_same_migration(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_mood.sql", "expand", "CREATE TYPE mood AS ENUM ('ok');")
    write_migration(
        tmp_path,
        "0002_meh.sql",
        "expand",
        "ALTER TYPE mood ADD VALUE 'meh';\nCREATE TABLE feelings (m mood DEFAULT 'meh');",
    )
    # The runner commits ADD VALUE on its own first; run in one transaction, PostgreSQL
    # would refuse with "unsafe use of new value". (The linter flags this shape for
    # tools that run a file in one transaction.)
    result = await runner.apply(
        pg_dsn, tmp_path, allow_hazards=["ban-enum-value-use-before-commit"]
    )
    assert result.runs[-1].steps_total == 2
    assert await fetchval(pg_dsn, "SELECT count(*) FROM pg_enum") == 2


async def test_server_notices_are_reported(pg_dsn: str, tmp_path: Path) -> None:
    await execute(pg_dsn, "CREATE TABLE t (a int); CREATE INDEX t_a ON t (a);")
    write_migration(
        tmp_path, "0001_idx.sql", "expand", "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_a ON t (a);"
    )
    events = Events()
    await runner.apply(pg_dsn, tmp_path, on_event=events)
    (notice,) = events.of(ServerNotice)
    assert notice.label == "0001_idx"
    assert 'relation "t_a" already exists, skipping' in notice.message


async def test_hazards_are_refused_unless_allowed(pg_dsn: str, tmp_path: Path) -> None:
    await execute(pg_dsn, "CREATE TABLE t (a int)")
    write_migration(tmp_path, "0001_idx.sql", "expand", "CREATE INDEX t_a ON t (a);")
    with pytest.raises(HazardError) as info:
        await runner.apply(pg_dsn, tmp_path)
    message = str(info.value)
    assert "0001_idx.sql:3: require-concurrent-index" in message
    assert "--allow-hazard require-concurrent-index" in message
    assert await fetchval(pg_dsn, "SELECT to_regclass('bluegreen_migrations') IS NOT NULL")
    assert await history(pg_dsn) == []
    result = await runner.apply(pg_dsn, tmp_path, raise_on_failure=False)
    assert [f.rule_id for f in result.hazards] == ["require-concurrent-index"]
    assert result.to_dict()["hazards"][0]["rule_id"] == "require-concurrent-index"
    ok = await runner.apply(pg_dsn, tmp_path, allow_hazards=["require-concurrent-index"])
    assert ok.runs[0].outcome.value == "applied"


async def test_backfill_statement_runs_in_batches(pg_dsn: str, tmp_path: Path) -> None:
    await execute(
        pg_dsn,
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text, status_code text);"
        "INSERT INTO orders SELECT g, 'new', NULL FROM generate_series(1, 2500) g;",
    )
    write_migration(
        tmp_path,
        "0001_copy_status.sql",
        "migrate",
        "-- bluegreen:backfill batch-size=1000 pause=0s\n"
        "UPDATE orders SET status_code = status WHERE status_code IS NULL;",
    )
    events = Events()
    result = await runner.apply(pg_dsn, tmp_path, on_event=events)
    assert result.runs[0].outcome.value == "applied"
    assert await fetchval(pg_dsn, "SELECT count(*) FROM orders WHERE status_code IS NULL") == 0
    from bluegreen.migrations.events import BackfillProgressed

    assert events.of(BackfillProgressed)


async def test_duration_metric_is_observed(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_metric_ok.sql", "expand", "CREATE TABLE m (id int);")
    write_migration(tmp_path, "0002_metric_bad.sql", "expand", "SELECT 1 / 0;")

    def count(name: str, status: str) -> float:
        value = MIGRATION_REGISTRY.get_sample_value(
            "migration_duration_seconds_count", {"migration_name": name, "status": status}
        )
        return value or 0.0

    before_ok = count("0001_metric_ok", "success")
    before_bad = count("0002_metric_bad", "failure")
    await runner.apply(pg_dsn, tmp_path, raise_on_failure=False)
    assert count("0001_metric_ok", "success") == before_ok + 1
    assert count("0002_metric_bad", "failure") == before_bad + 1


# --------------------------------------------------------------------------- locks


async def _app_loop(dsn: str, stop: asyncio.Event, latencies: list[float]) -> None:
    """An application: reads and writes on the table, one at a time, timing each."""
    conn = await asyncpg.connect(dsn)
    try:
        i = 0
        while not stop.is_set():
            started = time.monotonic()
            if i % 2:
                await conn.execute("UPDATE items SET v = v + 1 WHERE id = $1", i % 100 + 1)
            else:
                await conn.fetchval("SELECT sum(v) FROM items")
            latencies.append(time.monotonic() - started)
            i += 1
            await asyncio.sleep(0.005)
    finally:
        await conn.close()


async def test_ddl_behind_a_long_transaction_retries_and_never_stalls_the_app(
    pg_dsn: str, tmp_path: Path
) -> None:
    await execute(
        pg_dsn,
        "CREATE TABLE items (id int PRIMARY KEY, v int);"
        "INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g;",
    )
    write_migration(
        tmp_path,
        "0001_add_note.sql",
        "expand",
        "ALTER TABLE items ADD COLUMN note text;",
        "ALTER TABLE items DROP COLUMN note;",
    )
    lock_timeout = 0.5
    blocker = await asyncpg.connect(pg_dsn)
    blocker_pid = blocker.get_server_pid()
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.fetch("SELECT * FROM items LIMIT 1")  # ACCESS SHARE until the end
    held_since = time.monotonic()

    stop = asyncio.Event()
    latencies: list[float] = []
    app = asyncio.create_task(_app_loop(pg_dsn, stop, latencies))
    released = asyncio.Event()
    held_for: list[float] = []

    def on_event(event: Any) -> None:
        if isinstance(event, LockRetry) and event.attempt >= 3 and not released.is_set():
            released.set()

    async def release_after_retries() -> None:
        await released.wait()
        await transaction.rollback()
        held_for.append(time.monotonic() - held_since)

    releaser = asyncio.create_task(release_after_retries())
    events = Events()

    def both(event: Any) -> None:
        events(event)
        on_event(event)

    try:
        result = await runner.apply(
            pg_dsn,
            tmp_path,
            options=RunOptions(
                lock_timeout=lock_timeout, lock_retries=10, retry_base=0.2, retry_cap=0.4
            ),
            on_event=both,
        )
    finally:
        stop.set()
        await app
        await asyncio.wait_for(releaser, 5)
        await blocker.close()

    assert result.runs[0].outcome.value == "applied"
    retries = events.of(LockRetry)
    assert len(retries) >= 3
    assert all(r.sqlstate == "55P03" for r in retries)
    assert any(blocker_pid in [b.pid for b in r.blockers] for r in retries)
    named = next(b for r in retries for b in r.blockers if b.pid == blocker_pid)
    assert named.state == "idle in transaction"
    assert "SELECT * FROM items" in (named.query or "")
    assert named.holds is not None
    assert "AccessShareLock on items" in named.holds
    # The blocker held its lock for several lock timeouts; no application query
    # waited much longer than one lock timeout.
    assert held_for[0] > 3 * lock_timeout
    assert len(latencies) > 20
    assert max(latencies) < lock_timeout + 0.5, sorted(latencies)[-5:]
    (row,) = await history(pg_dsn)
    assert row["outcome"] == "applied"


async def test_lock_timeout_error_names_the_blocking_backend(pg_dsn: str, tmp_path: Path) -> None:
    await execute(pg_dsn, "CREATE TABLE items (id int)")
    write_migration(tmp_path, "0001_add.sql", "expand", "ALTER TABLE items ADD COLUMN note text;")
    blocker = await asyncpg.connect(pg_dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE items IN ACCESS SHARE MODE")
            result = await runner.apply(
                pg_dsn,
                tmp_path,
                options=RunOptions(lock_timeout=0.3, lock_retries=1, retry_base=0.1),
                raise_on_failure=False,
            )
    finally:
        await blocker.close()
    assert isinstance(result.error, MigrationLockTimeoutError)
    message = str(result.error)
    assert "0001_add.sql:3: 0001_add step 1" in message
    assert "within lock_timeout 300ms in 2 attempt(s) (SQLSTATE 55P03)" in message
    assert f"pid {blocker.get_server_pid()}, state idle in transaction" in message
    assert "LOCK TABLE items IN ACCESS SHARE MODE" in message
    (run,) = result.runs
    assert run.outcome.value == "failed"
    assert [b.pid for b in run.blockers] == [blocker.get_server_pid()]
    (row,) = await history(pg_dsn)
    assert row["outcome"] == "failed"
    assert "55P03" in row["error"]


async def test_two_runners_never_overlap(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(
        tmp_path,
        "0001_gate.sql",
        "expand",
        "SELECT pg_advisory_xact_lock(4242);\nCREATE TABLE first (id int);",
        header="-- bluegreen:lock-timeout 60s",
    )
    gate = await asyncpg.connect(pg_dsn)
    watcher = await asyncpg.connect(pg_dsn)
    try:
        await gate.execute("SELECT pg_advisory_lock(4242)")
        first = asyncio.create_task(runner.apply(pg_dsn, tmp_path))
        await eventually(lambda: waiting_on_lock(watcher, "bluegreen-migrate"))
        holder = await watcher.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'bluegreen-migrate (lock)'"
        )

        write_migration(tmp_path, "0002_second.sql", "expand", "CREATE TABLE second (id int);")
        with pytest.raises(RunnerLockError) as info:
            await runner.apply(pg_dsn, tmp_path, options=RunOptions(lock_wait=0.3))
        message = str(info.value)
        assert f"server pid {holder} (bluegreen-migrate (lock)" in message
        assert "connected since" in message
        assert "it is running 0001_gate (up) since" in message
        assert "Waited 300ms" in message

        events = Events()
        second = asyncio.create_task(
            runner.apply(pg_dsn, tmp_path, options=RunOptions(lock_wait=30), on_event=events)
        )
        await eventually(lambda: asyncio.sleep(0, result=bool(events)))  # it is waiting
        assert "waiting up to 30.0s for the runner lock" in events[0].describe()
        await gate.execute("SELECT pg_advisory_unlock(4242)")
        first_result = await asyncio.wait_for(first, 30)
        second_result = await asyncio.wait_for(second, 30)
    finally:
        await gate.close()
        await watcher.close()
    assert [r.label for r in first_result.runs] == ["0001_gate"]
    assert [r.label for r in second_result.runs] == ["0002_second"]
    rows = await history(pg_dsn)
    assert [(r["version"], r["outcome"]) for r in rows] == [(1, "applied"), (2, "applied")]
    assert rows[1]["started_at"] >= rows[0]["finished_at"]


async def test_stale_running_row_is_marked_interrupted(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_a.sql", "expand", "CREATE TABLE a (id int);")
    await runner.apply(pg_dsn, tmp_path)
    # A runner that died after committing its 'running' row (pid 1 is never a backend).
    await execute(
        pg_dsn,
        "INSERT INTO bluegreen_migrations (version, name, file, phase, direction, checksum, "
        "outcome, steps_total, steps_done, current_step, run_by, runner_pid, backend_pid, "
        "tool_version) VALUES (2, 'b', '0002_b.sql', 'expand', 'up', 'x', 'running', 2, 1, 2, "
        "'bob@host', 77, 1, '0.1.0')",
    )
    write_migration(tmp_path, "0002_b.sql", "expand", "SELECT 1;")
    statuses = {s.version: s for s in await runner.status(pg_dsn, tmp_path)}
    assert statuses[2].state is MigrationState.INTERRUPTED
    assert statuses[2].stale
    events = Events()
    result = await runner.apply(pg_dsn, tmp_path, on_event=events)
    (recovered,) = result.recovered
    assert recovered.outcome.value == "interrupted"
    assert "bob@host" in events[0].describe()
    assert "step 1 of 2 committed; step 2 was running" in events[0].describe()
    rows = await history(pg_dsn)
    assert [r["outcome"] for r in rows] == ["applied", "interrupted", "applied"]


# --------------------------------------------------------------------------- plan & check


async def test_plan_shows_steps_locks_and_row_estimates(pg_dsn: str, tmp_path: Path) -> None:
    await execute(
        pg_dsn,
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text);"
        "INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 5000) g; ANALYZE orders;"
        "CREATE TABLE fresh (id int); INSERT INTO fresh SELECT generate_series(1, 1200);"
        "SELECT pg_stat_force_next_flush();",  # never analyzed: the live-row counter
    )
    write_migration(
        tmp_path,
        "0001_status_code.sql",
        "expand",
        "ALTER TABLE orders ADD COLUMN status_code text;\n"
        "CREATE INDEX CONCURRENTLY orders_status_code_idx ON orders (status_code);\n"
        "CREATE TABLE order_events (id bigint);\n"
        "ALTER TABLE fresh ADD COLUMN note text;",
    )
    result = await runner.plan(pg_dsn, tmp_path)
    (m,) = result.migrations
    assert m.label == "0001_status_code"
    kinds = [(s.number, s.kind.value) for s in m.steps]
    assert kinds == [(1, "transaction"), (2, "standalone"), (3, "transaction")]
    alter = m.steps[0].statements[0]
    assert alter.lock is not None
    assert (alter.lock.mode, alter.lock.blocks) == ("ACCESS EXCLUSIVE", "reads and writes")
    (orders,) = alter.tables
    assert (orders.name, orders.exists, orders.estimated_rows) == ("orders", True, 5000)
    assert orders.source == "reltuples"
    assert orders.size_bytes is not None
    assert orders.size_bytes > 0
    index = m.steps[1].statements[0]
    assert index.lock is not None
    assert index.lock.mode == "SHARE UPDATE EXCLUSIVE"
    assert not index.lock.blocks_writes
    assert m.steps[1].reason == "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
    new_table = m.steps[2].statements[0].tables[0]
    assert (new_table.name, new_table.exists) == ("order_events", False)
    (fresh,) = m.steps[2].statements[1].tables
    assert (fresh.name, fresh.estimated_rows) == ("fresh", 1200)
    assert await fetchval(pg_dsn, "SELECT to_regclass('bluegreen_migrations')") is None
    down = await runner.plan(pg_dsn, tmp_path, direction=Direction.DOWN)
    assert down.migrations == ()


async def test_check_schema(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(
        tmp_path, "0007_orders.sql", "expand", "CREATE TABLE orders (id int, status text);"
    )
    before = await check_schema(pg_dsn, require=["orders"], min_version=7)
    assert not before.ok
    assert before.current_version is None
    assert before.missing == ("orders", "version>=7")
    await runner.apply(pg_dsn, tmp_path)
    conn = await asyncpg.connect(pg_dsn)
    try:
        ok = await check_schema(conn, require=["orders", "orders.status"], min_version=7)
        assert (ok.ok, ok.current_version, ok.missing) == (True, 7, ())
        assert ok.details["orders.status"] == "present (text)"
        missing = await check_schema(
            conn, require=["orders.status_code", "public.orders.id", "nope"], min_version=8
        )
    finally:
        await conn.close()
    assert not missing.ok
    assert missing.missing == ("orders.status_code", "nope", "version>=8")
    assert missing.details["orders.status_code"] == "column status_code not found in table orders"
    assert missing.details["version>=8"] == "version 7 applied; need at least 8"
    assert missing.to_dict()["status"] == "unhealthy"


async def test_losing_the_runner_lock_stops_before_the_next_step(
    pg_dsn: str, tmp_path: Path
) -> None:
    write_migration(
        tmp_path,
        "0001_two_steps.sql",
        "expand",
        "SELECT pg_advisory_xact_lock(4242);\nCREATE TABLE a (id int);\n"
        "CREATE INDEX CONCURRENTLY a_id ON a (id);",
        header="-- bluegreen:lock-timeout 60s",
    )
    gate = await asyncpg.connect(pg_dsn)
    try:
        await gate.execute("SELECT pg_advisory_lock(4242)")
        task = asyncio.create_task(runner.apply(pg_dsn, tmp_path, raise_on_failure=False))
        await eventually(lambda: waiting_on_lock(gate, "bluegreen-migrate"))
        await gate.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'bluegreen-migrate (lock)'"
        )
        await gate.execute("SELECT pg_advisory_unlock(4242)")
        result = await asyncio.wait_for(task, 30)
    finally:
        await gate.close()
    assert "lost the connection that holds the runner lock" in str(result.error)
    rows = await history(pg_dsn)
    assert [(r["outcome"], r["steps_done"]) for r in rows] == [("failed", 1)]
    resumed = await runner.apply(pg_dsn, tmp_path)
    assert (resumed.runs[0].outcome.value, resumed.runs[0].resumed_from) == ("applied", 1)


async def test_a_run_cancelled_during_its_clean_up_leaves_no_session_behind(
    pg_dsn: str, tmp_path: Path
) -> None:
    # A caller that cancels again while the run closes (a controller shutting down
    # while it stops migrations) must not leave the runner's sessions open: the lock
    # session would keep the runner lock, and the sockets would leak.
    write_migration(tmp_path, "0001_slow.sql", "expand", "SELECT pg_sleep(30);")
    started = asyncio.Event()

    def on_event(event: Any) -> None:
        if isinstance(event, MigrationStarted):
            started.set()

    task = asyncio.create_task(runner.apply(pg_dsn, tmp_path, on_event=on_event))
    await asyncio.wait_for(started.wait(), 30)
    while not task.done():  # cancel at every await, the clean-up's included
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task

    async def sessions_gone() -> bool:
        count = await fetchval(
            pg_dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'bluegreen-migrate%'",
        )
        return count == 0

    await eventually(sessions_gone, within=10)
    assert await fetchval(pg_dsn, "SELECT pg_try_advisory_lock($1)", RUNNER_LOCK_KEY) is True


async def test_unknown_allowed_rule_is_a_usage_error(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_a.sql", "expand", "CREATE TABLE a (id int);")
    with pytest.raises(UsageError, match="unknown lint rule require-concurent-index"):
        await runner.apply(pg_dsn, tmp_path, allow_hazards=["require-concurent-index"])


# --------------------------------------------------------------------------- backfill progress keys

GUARD = """
CREATE TABLE stop_at (id bigint);
CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM stop_at WHERE NEW.id >= stop_at.id) THEN
    RAISE EXCEPTION 'guard: row % is off limits', NEW.id;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER guard BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION guard();
"""
COPY_UP = (
    "-- bluegreen:backfill batch-size=500 pause=0\n"
    "UPDATE orders SET status_code = status WHERE status_code IS NULL;"
)


async def orders_with_guard(dsn: str, rows: int = 2000) -> None:
    """``orders`` with ``rows`` rows to backfill, and a trigger that makes every UPDATE of
    a row at or above ``stop_at.id`` fail (none while ``stop_at`` is empty)."""
    await execute(
        dsn,
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text, status_code text);"
        f"INSERT INTO orders SELECT g, 's' || g, NULL FROM generate_series(1, {rows}) g;" + GUARD,
    )


async def saved_progress(dsn: str) -> list[tuple[str, int, str | None, int]]:
    from bluegreen.migrations.backfill import load_progress

    conn = await asyncpg.connect(dsn)
    try:
        return [
            (r.migration, r.statement_index, r.last_key, r.rows_done)
            for r in await load_progress(conn)
        ]
    finally:
        await conn.close()


async def test_down_forgets_the_ups_saved_backfill_progress(pg_dsn: str, tmp_path: Path) -> None:
    """A hand-written down that resets the data must not let the next up resume halfway."""
    from bluegreen.errors import BackfillInterruptedError
    from bluegreen.migrations.backfill import BackfillSpec, run_backfill
    from bluegreen.migrations.files import parse_migration
    from bluegreen.migrations.sql import parse_statements

    await orders_with_guard(pg_dsn)
    path = write_migration(
        tmp_path,
        "0001_copy_status.sql",
        "migrate",
        COPY_UP,
        "UPDATE orders SET status_code = NULL;  -- no backfill here: a plain reset",
    )
    await runner.apply(pg_dsn, tmp_path)
    # Saved progress of the up's backfill, as an interrupted run leaves it: stopped
    # after its first batch (keys 1..500).
    m = parse_migration(path)
    (stmt,) = parse_statements(m.up.sql, first_line=m.up.first_line)
    spec = BackfillSpec.from_statement(stmt, "0001_copy_status", 1, source=str(path))
    batches: list[object] = []
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(BackfillInterruptedError):
            await run_backfill(
                conn, spec, progress=batches.append, should_stop=lambda: bool(batches)
            )
    finally:
        await conn.close()
    assert await saved_progress(pg_dsn) == [("0001_copy_status", 1, "500", 0)]

    events = Events()
    await runner.rollback(pg_dsn, tmp_path, on_event=events)
    assert await fetchval(pg_dsn, "SELECT count(*) FROM orders WHERE status_code IS NULL") == 2000
    assert await saved_progress(pg_dsn) == []
    from bluegreen.migrations.events import Note

    assert any("forgot the saved progress of 1" in e.message for e in events.of(Note))

    await runner.apply(pg_dsn, tmp_path)
    # resuming after key 500 would have left rows 1..500 NULL
    assert await fetchval(pg_dsn, "SELECT count(*) FROM orders WHERE status_code IS NULL") == 0


async def test_down_backfill_saves_progress_under_its_own_key(pg_dsn: str, tmp_path: Path) -> None:
    from bluegreen.migrations.events import BackfillProgressed

    await orders_with_guard(pg_dsn)
    write_migration(
        tmp_path,
        "0001_copy_status.sql",
        "migrate",
        COPY_UP,
        "-- bluegreen:backfill batch-size=500 pause=0\n"
        "UPDATE orders SET status_code = NULL WHERE status_code IS NOT NULL;",
    )
    await runner.apply(pg_dsn, tmp_path)
    await execute(pg_dsn, "INSERT INTO stop_at VALUES (1200)")
    failed = await runner.rollback(pg_dsn, tmp_path, raise_on_failure=False)
    assert failed.error is not None
    assert "guard: row 1200 is off limits" in str(failed.error)
    assert await saved_progress(pg_dsn) == [("0001_copy_status:down", 1, "1000", 1000)]
    assert await states(pg_dsn, tmp_path) == {1: "rollback_failed"}

    await execute(pg_dsn, "DELETE FROM stop_at")
    events = Events()
    await runner.rollback(pg_dsn, tmp_path, on_event=events)
    progressed = [e.progress for e in events.of(BackfillProgressed)]
    # resumed after key 1000: the first batch of this run brings the total to 1500
    assert progressed[0].rows_done == 1500
    assert progressed[-1].finished
    assert await fetchval(pg_dsn, "SELECT count(*) FROM orders WHERE status_code IS NULL") == 2000
    assert await saved_progress(pg_dsn) == []
    await runner.apply(pg_dsn, tmp_path)
    assert await fetchval(pg_dsn, "SELECT count(*) FROM orders WHERE status_code IS NULL") == 0


async def test_status_report_shows_unfinished_backfills(pg_dsn: str, tmp_path: Path) -> None:
    await orders_with_guard(pg_dsn)
    await execute(pg_dsn, "INSERT INTO stop_at VALUES (1200)")
    write_migration(tmp_path, "0001_copy_status.sql", "migrate", COPY_UP)
    report = await runner.status_report(pg_dsn, tmp_path)
    assert report.backfills == ()
    failed = await runner.apply(pg_dsn, tmp_path, raise_on_failure=False)
    assert failed.error is not None

    report = await runner.status_report(pg_dsn, tmp_path)
    assert [s.state.value for s in report.migrations] == ["failed"]
    (backfill,) = report.backfills
    data = backfill.to_dict()
    assert data["updated_at"] is not None
    del data["started_at"], data["updated_at"]
    assert data == {
        "migration": "0001_copy_status",
        "direction": "up",
        "step": 1,
        "line": 4,
        "statement": "UPDATE orders SET status_code = status WHERE status_code IS NULL",
        "table": "orders",
        "mode": "key",
        "key": "id",
        "last_key": "1000",
        "rows_done": 1000,
        "batches": 2,
    }
    await execute(pg_dsn, "DELETE FROM stop_at")
    await runner.apply(pg_dsn, tmp_path)
    assert (await runner.status_report(pg_dsn, tmp_path)).backfills == ()


# --------------------------------------------------------------------------- comment-only downs


async def test_down_with_only_comments_is_a_reversible_no_op(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_t.sql", "expand", "CREATE TABLE t (a int);", "DROP TABLE t;")
    write_migration(
        tmp_path,
        "0002_fill.sql",
        "migrate",
        "INSERT INTO t VALUES (1);",
        "-- nothing to undo: the row goes away with t",
    )
    await runner.apply(pg_dsn, tmp_path)
    statuses = await runner.status(pg_dsn, tmp_path)
    assert [s.reversible for s in statuses] == [True, True]
    plan = await runner.plan(pg_dsn, tmp_path, direction=Direction.DOWN)
    (planned,) = plan.migrations
    assert (planned.label, planned.reversible, planned.steps) == ("0002_fill", True, ())
    assert planned.notes == (
        "the down section has only comments: nothing to run "
        "(nothing to undo: the row goes away with t)",
    )

    events = Events()
    result = await runner.rollback(pg_dsn, tmp_path, on_event=events)
    (run,) = result.runs
    assert (run.label, run.outcome.value, run.steps_total) == ("0002_fill", "rolled_back", 0)
    assert "rolling back 0002_fill (migrate, no statements)" in [e.describe() for e in events]
    assert await fetchval(pg_dsn, "SELECT count(*) FROM t") == 1  # nothing ran
    assert await states(pg_dsn, tmp_path) == {1: "applied", 2: "pending"}
    rows = await history(pg_dsn)
    assert (rows[-1]["direction"], rows[-1]["outcome"]) == ("down", "rolled_back")
    await runner.rollback(pg_dsn, tmp_path)
    assert await fetchval(pg_dsn, "SELECT to_regclass('t')") is None


# --------------------------------------------------------------------------- plan with facts


async def test_plan_knows_what_earlier_files_established(pg_dsn: str, tmp_path: Path) -> None:
    write_migration(
        tmp_path,
        "0001_t.sql",
        "expand",
        "CREATE TABLE t (id int PRIMARY KEY, c varchar(50), d int);\n"
        "ALTER TABLE t ADD CONSTRAINT t_d_not_null CHECK (d IS NOT NULL) NOT VALID;",
        "DROP TABLE t;",
    )
    write_migration(
        tmp_path, "0002_validate.sql", "migrate", "ALTER TABLE t VALIDATE CONSTRAINT t_d_not_null;"
    )
    write_migration(
        tmp_path,
        "0003_tighten.sql",
        "contract",
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n"
        "ALTER TABLE t ALTER COLUMN d SET NOT NULL;",
        "ALTER TABLE t ALTER COLUMN d DROP NOT NULL;\n"
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(50);",
    )
    await runner.apply(pg_dsn, tmp_path, to=2)
    (planned,) = (await runner.plan(pg_dsn, tmp_path)).migrations
    narrow, set_not_null = planned.steps[0].statements
    assert narrow.lock is not None
    assert set_not_null.lock is not None
    # alone, the statements would read "assumed a widening change" and "scans the table"
    assert narrow.lock.rewrites
    assert "varchar(50) -> varchar(20) must check every row" in narrow.lock.note
    assert not set_not_null.lock.scans
    assert set_not_null.lock.note == "a validated CHECK proves it: no scan"
