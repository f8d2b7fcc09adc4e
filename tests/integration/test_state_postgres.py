"""PostgreSQL state store against a real server: CAS, NOTIFY, outages, heartbeats, leadership.

Outages are made for real: backends are terminated with pg_terminate_backend,
and "the database is unreachable" is a TCP forwarder between the store and
the server that drops every connection and refuses new ones, then comes back
(what a restart or a network cut looks like from the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from bluegreen.errors import StateConflictError, StateError
from bluegreen.state import open_store
from bluegreen.state.model import (
    Flag,
    ReplicaInfo,
    StateDocument,
    format_time,
    with_flag,
    with_weights,
)
from bluegreen.state.postgres import LISTENER_APP_NAME, PostgresLeadership, PostgresStateStore

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres


def now() -> datetime:
    return datetime.now(UTC)


def bump(doc: StateDocument) -> StateDocument:
    return with_weights(doc, doc.green_weight_bp + 1, "test", now())


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    """Poll ``check`` until true or fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


async def eventually_async(check: Callable[[], Awaitable[bool]], within: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


class Seen:
    """Records versions a store publishes; lets a test await one."""

    def __init__(self, store: PostgresStateStore) -> None:
        self.versions: list[int] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        store.subscribe(self._on)

    def _on(self, doc: StateDocument) -> None:
        self.versions.append(doc.version)
        for version, fut in self._waiters:
            if doc.version >= version and not fut.done():
                fut.set_result(None)

    async def reached(self, version: int, within: float = 1.0) -> None:
        if self.versions and self.versions[-1] >= version:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((version, fut))
        await asyncio.wait_for(fut, within)


def replica(replica_id: str, applied: int) -> ReplicaInfo:
    return ReplicaInfo(
        id=replica_id,
        applied_version=applied,
        host="testhost",
        pid=1,
        listen="127.0.0.1:0",
        started_at=format_time(now()),
    )


def with_port(dsn: str, port: int, pw: str | None = None) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    auth = f"{user}:{pw}@" if pw else f"{user}@"
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))


StoreFactory = Callable[..., Awaitable[PostgresStateStore]]


@pytest.fixture
async def make_store(pg_dsn: str) -> AsyncIterator[StoreFactory]:
    """Open PostgreSQL stores with test-friendly intervals; all closed afterwards."""
    opened: list[PostgresStateStore] = []

    async def factory(dsn: str | None = None, **options: Any) -> PostgresStateStore:
        settings: dict[str, Any] = {
            "actor": f"store{len(opened)}",
            "poll_interval": 0.1,
            "replica_expiry": 0.5,
            "reconnect_initial": 0.05,
            "reconnect_max": 0.2,
            "connect_timeout": 2,
            "command_timeout": 2,
        }
        settings.update(options)
        store = PostgresStateStore(dsn or pg_dsn, **settings)
        opened.append(store)
        await store.open()
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def admin(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    yield conn
    await conn.close()


async def terminate(admin: asyncpg.Connection, pid: int) -> None:
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)


# --------------------------------------------------------------------------- document


async def test_open_creates_tables_once_even_when_replicas_start_together(pg_dsn: str) -> None:
    stores = [PostgresStateStore(pg_dsn, actor=f"r{i}") for i in range(3)]
    docs = await asyncio.gather(*(store.open() for store in stores))
    assert {doc.version for doc in docs} == {1}
    assert len({doc.history[0].at for doc in docs}) == 1  # one of them created it
    for store in stores:
        await store.close()


async def test_cas_conflict_one_wins_the_other_gets_expected_and_found(
    make_store: StoreFactory, admin: asyncpg.Connection
) -> None:
    a, b = await make_store(), await make_store()
    doc_a, doc_b = await a.read(), await b.read()
    won = await a.compare_and_set(doc_a.version, with_weights(doc_a, 1000, "a", now()))
    assert won.version == 2
    with pytest.raises(StateConflictError) as info:
        await b.compare_and_set(doc_b.version, with_weights(doc_b, 2000, "b", now()))
    assert (info.value.expected, info.value.found) == (1, 2)
    row = await admin.fetchrow(
        "SELECT version, document->>'green_weight_bp' AS w FROM bluegreen_state"
    )
    assert (row["version"], row["w"]) == (2, "1000")


async def test_concurrent_updates_lose_nothing(make_store: StoreFactory) -> None:
    a, b = await make_store(), await make_store()

    async def writer(store: PostgresStateStore) -> None:
        for _ in range(15):
            await store.update(bump, attempts=50)

    await asyncio.gather(writer(a), writer(b))
    final = await a.read()
    assert (final.green_weight_bp, final.version) == (30, 31)


async def test_a_write_reaches_every_replica_within_a_second(make_store: StoreFactory) -> None:
    # Polling is slowed right down, so only NOTIFY can deliver within the second.
    stores = [await make_store(poll_interval=30, keepalive_interval=30) for _ in range(3)]
    seen = [Seen(store) for store in stores]
    for i in range(6):
        writer = stores[i % 3]
        flag = Flag(f"f{i}", percent_bp=i)

        def change(doc: StateDocument, flag: Flag = flag) -> StateDocument:
            return with_flag(bump(doc), flag, "t", now())

        doc = await writer.update(change)
        await asyncio.gather(*(s.reached(doc.version, within=1.0) for s in seen))
    for store in stores:
        assert store.current == doc
    assert all(s.versions == [2, 3, 4, 5, 6, 7] for s in seen)


# --------------------------------------------------------------------------- outages


async def test_listener_terminated_reconnects_and_converges(
    make_store: StoreFactory, admin: asyncpg.Connection
) -> None:
    a = await make_store()
    b = await make_store(poll_interval=30, keepalive_interval=30)
    old_pid = b.listener_pid
    assert old_pid is not None
    with capture_logs() as logs:
        await terminate(admin, old_pid)
        await eventually(lambda: b.listener_pid not in (None, old_pid))
    events = [e["event"] for e in logs]
    assert "state_listener_lost" in events
    assert "state_listener_reconnected" in events
    seen = Seen(b)
    doc = await a.update(bump)
    await seen.reached(doc.version, within=1.0)  # notifications flow again
    listeners = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = $1",
        LISTENER_APP_NAME,
    )
    assert listeners == 2  # a's and b's; the terminated one is gone, nothing leaked


async def test_polls_while_the_listener_is_down(
    make_store: StoreFactory, admin: asyncpg.Connection
) -> None:
    a = await make_store()
    # Reconnecting is pushed far out, so only polling can deliver.
    b = await make_store(poll_interval=0.1, reconnect_initial=60, reconnect_max=60)
    pid = b.listener_pid
    assert pid is not None
    await terminate(admin, pid)
    await eventually(lambda: not b.listening)
    seen = Seen(b)
    doc = await a.update(bump)
    await seen.reached(doc.version, within=1.0)
    assert not b.listening


async def test_all_sessions_terminated_then_everything_works_again(
    make_store: StoreFactory, admin: asyncpg.Connection
) -> None:
    a = await make_store()
    b = await make_store()
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    seen = Seen(a)
    doc = await b.update(bump)  # the pool reconnects on its own
    await seen.reached(doc.version, within=2.0)
    await eventually(lambda: a.listening and b.listening)
    doc = await a.update(bump)
    await Seen(b).reached(doc.version, within=1.0)


async def test_a_write_whose_session_was_terminated_lands_exactly_once(
    make_store: StoreFactory, admin: asyncpg.Connection
) -> None:
    store = await make_store()
    for round_ in range(3):
        doc = await store.read()
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'bluegreen-state'"
        )
        stored = await store.compare_and_set(doc.version, bump(doc))
        assert stored.version == doc.version + 1
        row = await admin.fetchrow(
            "SELECT version, document->>'green_weight_bp' AS w FROM bluegreen_state"
        )
        assert (row["version"], int(row["w"])) == (doc.version + 1, round_ + 1)


class Forwarder:
    """A TCP forwarder to PostgreSQL that can drop everything and refuse connections."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.target_port = host, port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    async def cut(self) -> None:
        """Refuse new connections and drop every open one (like a crashed server)."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def stop(self) -> None:
        await self.cut()


@pytest.fixture
async def forwarder(pg_dsn: str) -> AsyncIterator[Forwarder]:
    parts = urlsplit(pg_dsn)
    fwd = Forwarder(parts.hostname or "127.0.0.1", parts.port or 5432)
    await fwd.start()
    yield fwd
    await fwd.stop()


async def test_database_unreachable_keeps_serving_and_converges_after(
    make_store: StoreFactory, forwarder: Forwarder, pg_dsn: str
) -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    direct = await make_store()
    dsn = with_port(pg_dsn, forwarder.port, pw="pw-never-shown")
    remote = await make_store(dsn, connect_timeout=1, command_timeout=1)
    seen = Seen(remote)
    before = await direct.update(bump)
    await seen.reached(before.version)

    with capture_logs() as logs:
        await forwarder.cut()
        await eventually(lambda: not remote.listening)
        # The hot path keeps its last known state; background tasks swallow the outage.
        doc = await direct.update(bump)
        await eventually(lambda: any(e["event"] == "state_poll_failed" for e in logs))
        assert remote.current.version == before.version
        with pytest.raises(StateError) as info:
            await remote.read()
        assert "***" in str(info.value)
        assert "pw-never-shown" not in str(info.value)
        assert "Is PostgreSQL running and reachable?" in str(info.value)
        with pytest.raises(StateError):
            await remote.heartbeat(replica("r1", before.version))

        await forwarder.start()  # the database is back, on the same address
        await seen.reached(doc.version, within=3.0)
        await eventually(lambda: remote.listening)
    assert all("pw-never-shown" not in str(event) for event in logs)
    assert sum(e["event"] == "state_poll_failed" for e in logs) == 1  # once per outage
    doc = await direct.update(bump)
    await seen.reached(doc.version, within=1.0)  # notifications again
    assert loop_errors == []


async def test_unreachable_at_open_is_a_state_error_with_the_password_masked(pg_dsn: str) -> None:
    store = open_store(with_port(pg_dsn, 1, pw="hunter2"), actor="t")
    with pytest.raises(StateError) as info:
        await store.open()
    message = str(info.value)
    assert "hunter2" not in message
    assert "postgres:***@127.0.0.1:1" in message
    await store.close()


async def test_missing_database_says_so(pg_dsn: str) -> None:
    parts = urlsplit(pg_dsn)
    store = PostgresStateStore(urlunsplit(parts._replace(path="/no_such_db_xyz")), actor="t")
    with pytest.raises(StateError, match="does not exist; create it first"):
        await store.open()
    await store.close()


# --------------------------------------------------------------------------- replicas


async def test_heartbeats_expiry_and_wait_applied(make_store: StoreFactory) -> None:
    a, b = await make_store(), await make_store()
    doc = await a.update(bump)
    await a.heartbeat(replica("r1", doc.version))
    await b.heartbeat(replica("r2", doc.version - 1))
    statuses = await b.replicas()
    assert [(s.info.id, s.alive, s.info.applied_version) for s in statuses] == [
        ("r1", True, 2),
        ("r2", True, 1),
    ]
    assert not await a.wait_applied(doc.version, timeout=0.15)

    async def apply_later() -> None:
        await asyncio.sleep(0.05)
        await b.heartbeat(replica("r2", doc.version))

    task = asyncio.create_task(apply_later())
    assert await a.wait_applied(doc.version, timeout=2)
    await task

    async def all_expired() -> bool:
        return not any(s.alive for s in await a.replicas())

    await eventually_async(all_expired)  # replica_expiry=0.5 s, by the database clock
    assert [s.info.id for s in await a.replicas()] == ["r1", "r2"]  # still listed, flagged dead
    assert not await a.wait_applied(1, timeout=0.05)


async def test_close_marks_own_replicas_stopped(make_store: StoreFactory) -> None:
    a = await make_store(replica_expiry=30)
    b = await make_store(replica_expiry=30)
    await a.heartbeat(replica("proxy-a", 1))
    await b.heartbeat(replica("proxy-b", 1))
    await a.close()
    statuses = {s.info.id: s for s in await b.replicas()}
    assert (statuses["proxy-a"].alive, statuses["proxy-a"].stopped) == (False, True)
    assert statuses["proxy-b"].alive
    assert await b.wait_applied(1, timeout=1)  # a stopped replica does not hold anyone up


# --------------------------------------------------------------------------- leadership


async def test_leadership_is_exclusive_and_passes_on_release(make_store: StoreFactory) -> None:
    a, b = await make_store(), await make_store()
    lead = await a.acquire_leadership()
    assert lead is not None
    assert await b.acquire_leadership() is None
    assert await a.acquire_leadership() is None
    assert await b.acquire_leadership("migrations") is not None
    await lead.release()
    second = await b.acquire_leadership()
    assert second is not None
    assert not lead.lost.is_set()


async def test_leadership_is_lost_when_its_session_dies_and_another_takes_over(
    make_store: StoreFactory, admin: asyncpg.Connection
) -> None:
    a, b = await make_store(), await make_store()
    lead = await a.acquire_leadership()
    assert isinstance(lead, PostgresLeadership)
    await terminate(admin, lead.backend_pid)
    await asyncio.wait_for(lead.lost.wait(), 2)
    assert not lead.held

    async def b_leads() -> bool:
        got = await b.acquire_leadership()
        return got is not None

    await eventually_async(b_leads)


async def test_followers_retrying_reuse_one_session(
    make_store: StoreFactory, admin: asyncpg.Connection
) -> None:
    a, b = await make_store(), await make_store()
    assert await a.acquire_leadership() is not None
    for _ in range(5):
        assert await b.acquire_leadership() is None
    sessions = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'bluegreen-leader'"
    )
    assert sessions == 2  # the leader's and b's spare, not one per attempt


_HOLDER = """
import asyncio, sys
import structlog
from bluegreen.state.postgres import PostgresStateStore

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is ours

async def main():
    store = PostgresStateStore(sys.argv[1], actor="holder")
    await store.open()
    lead = await store.acquire_leadership("controller")
    print("leader" if lead else "follower", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_leadership_passes_when_the_leader_process_is_killed(
    make_store: StoreFactory, pg_dsn: str
) -> None:
    follower = await make_store()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, pg_dsn, stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"leader"
        assert await follower.acquire_leadership("controller") is None
        proc.kill()
        await proc.wait()

        async def follower_leads() -> bool:
            return await follower.acquire_leadership("controller") is not None

        await eventually_async(follower_leads)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
