"""PostgreSQL backend: one row plus LISTEN/NOTIFY, for many proxy replicas.

Tables (created if missing, under an advisory lock so concurrent starts do
not race on the catalog):

- ``bluegreen_state`` — a single row ``id = 1`` with ``version``, the
  ``document`` (jsonb) and ``updated_at``. Compare-and-set is one statement:
  ``UPDATE … SET version = version + 1 … WHERE id = 1 AND version = $1``
  with ``pg_notify('bluegreen_state', version)`` in the same transaction, so
  the notification is sent if and only if the write commits.
- ``bluegreen_replicas`` — heartbeats: ``id``, ``applied_version``,
  ``heartbeat_at`` (the database's clock, so hosts with skewed clocks agree
  on expiry), ``stopped_at`` and ``info`` (jsonb).

Connections: a small pool for reads, writes and heartbeats; one dedicated
listener connection per store; one session per leadership (an advisory lock
lives exactly as long as its session).

Watching: the listener connection receives the new version number and the
store fetches the document. If that connection drops (terminated, server
restart, network), a background task reconnects with exponential backoff
and polls the row every ``poll_interval`` meanwhile; after reconnecting it
reads once to catch up on what it missed. A keepalive query on the listener
every ``keepalive_interval`` notices connections that died silently. None of
this raises into callers: while the database is away ``current`` keeps the
last known document and problems are logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar

import asyncpg
import structlog

from bluegreen.errors import InvalidFieldError, StateConflictError, StateError
from bluegreen.state.leader import Leadership
from bluegreen.state.model import (
    ReplicaInfo,
    ReplicaStatus,
    StateDocument,
    format_time,
    from_json,
    initial_document,
    replica_info_from_dict,
    replica_info_to_dict,
    to_json,
)
from bluegreen.state.store import (
    DEFAULT_DEAD_RETENTION,
    DEFAULT_REPLICA_EXPIRY,
    BaseStateStore,
    Clock,
    dsn_secrets,
    mask_dsn,
    scrub,
    utc_now,
)

log = structlog.get_logger("bluegreen.state")

CHANNEL: Final = "bluegreen_state"
APP_NAME: Final = "bluegreen-state"
LISTENER_APP_NAME: Final = "bluegreen-state-listener"
LEADER_APP_NAME: Final = "bluegreen-leader"


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` (namespaced to bluegreen)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"bluegreen.lock").digest()
    return int.from_bytes(digest, "big", signed=True)


_SCHEMA_LOCK_KEY: Final = _advisory_key("schema:bluegreen_state")

_DDL: Final = """
CREATE TABLE IF NOT EXISTS bluegreen_state (
    id integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL,
    document jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bluegreen_replicas (
    id text PRIMARY KEY,
    applied_version bigint NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    stopped_at timestamptz,
    info jsonb NOT NULL
);
"""

_TABLES_EXIST: Final = """
SELECT to_regclass('bluegreen_state') IS NOT NULL
   AND to_regclass('bluegreen_replicas') IS NOT NULL
"""

_INSERT_INITIAL: Final = """
INSERT INTO bluegreen_state (id, version, document) VALUES (1, 1, $1::jsonb)
ON CONFLICT (id) DO NOTHING
"""

_SELECT: Final = "SELECT version, document::text AS document FROM bluegreen_state WHERE id = 1"
_SELECT_VERSION: Final = "SELECT version FROM bluegreen_state WHERE id = 1"

# One statement, one implicit transaction: the NOTIFY goes out iff the UPDATE commits.
_CAS: Final = """
WITH updated AS (
    UPDATE bluegreen_state
       SET version = version + 1, document = $2::jsonb, updated_at = now()
     WHERE id = 1 AND version = $1
 RETURNING version
)
SELECT version, pg_notify($3, version::text) FROM updated
"""

_HEARTBEAT: Final = """
INSERT INTO bluegreen_replicas (id, applied_version, heartbeat_at, stopped_at, info)
VALUES ($1, $2, now(), NULL, $3::jsonb)
ON CONFLICT (id) DO UPDATE
   SET applied_version = EXCLUDED.applied_version,
       heartbeat_at = now(),
       stopped_at = NULL,
       info = EXCLUDED.info
"""

_REPLICAS: Final = """
WITH forgotten AS (
    DELETE FROM bluegreen_replicas WHERE heartbeat_at < now() - make_interval(secs => $1)
)
SELECT id, info::text AS info, heartbeat_at, stopped_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS age
  FROM bluegreen_replicas
 WHERE heartbeat_at >= now() - make_interval(secs => $1)
 ORDER BY id
"""

_STOP_REPLICAS: Final = (
    "UPDATE bluegreen_replicas SET stopped_at = now() WHERE id = ANY($1::text[])"
)

# What a database or network failure can raise; everything else is a bug and propagates.
_DB_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


# A pooled session the server already ended (restart, pg_terminate_backend) fails on
# first use before the client has noticed: as "connection closed", as the server's
# shutdown error, or — when the FATAL message arrived while the session sat idle —
# as asyncpg's InternalClientError about its protocol state. Worth one more try on a
# fresh session.
_SESSION_LOST: Final = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

_T = TypeVar("_T")


def _hint(exc: BaseException) -> str:
    """What to do next, chosen by the error's class (never by its text)."""
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return "Check the user and password in the state DSN."
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return "The database does not exist; create it first."
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return (
            "Grant this role the right to create (or use) the tables "
            "bluegreen_state and bluegreen_replicas."
        )
    return "Is PostgreSQL running and reachable? Proxies keep serving the last known state."


class PostgresStateStore(BaseStateStore):
    """The state in PostgreSQL; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        *,
        actor: str,
        initial: StateDocument | None = None,
        poll_interval: float = 1.0,
        replica_expiry: float = DEFAULT_REPLICA_EXPIRY,
        dead_retention: float = DEFAULT_DEAD_RETENTION,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 10.0,
        keepalive_interval: float = 5.0,
        pool_size: int = 3,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(
            location=mask_dsn(dsn),
            actor=actor,
            initial=initial,
            replica_expiry=replica_expiry,
            dead_retention=dead_retention,
            clock=clock,
        )
        if poll_interval <= 0 or reconnect_initial <= 0 or keepalive_interval <= 0:
            raise ValueError("poll_interval, reconnect_initial and keepalive_interval must be > 0")
        self._dsn = dsn
        self._secrets = dsn_secrets(dsn)
        self.poll_interval = poll_interval
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = max(reconnect_max, reconnect_initial)
        self.keepalive_interval = keepalive_interval
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._spare: asyncpg.Connection | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_again = False
        self._first_listen: asyncio.Event | None = None
        self._listener_down = False
        self._poll_failing = False
        self._closing = False

    @property
    def listening(self) -> bool:
        """Whether the notification connection is up (else the store is polling)."""
        return self._listener is not None and not self._listener.is_closed()

    @property
    def listener_pid(self) -> int | None:
        """Server process id of the notification connection (for diagnostics), if up."""
        if not self.listening:
            return None
        assert self._listener is not None  # noqa: S101 - checked by listening
        pid: int = self._listener.get_server_pid()
        return pid

    # ----------------------------------------------------------------- errors

    def _state_error(self, what: str, exc: BaseException) -> StateError:
        detail = scrub(str(exc), self._secrets) or type(exc).__name__
        return StateError(
            f"state store {self.location}: {what} failed ({type(exc).__name__}: {detail}). "
            f"{_hint(exc)}"
        )

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate database and network errors into :class:`StateError`."""
        try:
            yield
        except _DB_ERRORS as exc:
            raise self._state_error(what, exc) from exc

    async def _idempotent(self, what: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run a repeatable query; retry once if its pooled session had been ended."""
        try:
            return await operation()
        except _SESSION_LOST:
            await self._renew_sessions()
        except _DB_ERRORS as exc:
            raise self._state_error(what, exc) from exc
        with self._errors(what):
            return await operation()

    async def _renew_sessions(self) -> None:
        """After one dead pooled session, assume all are: replace them on next use."""
        if self._pool is not None:
            await self._pool.expire_connections()

    async def _connect(self, app_name: str) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            server_settings={"application_name": app_name},
        )
        return conn

    def _require_pool(self) -> asyncpg.Pool:
        self._check_open()
        if self._pool is None:
            raise StateError(f"state store {self.location} is not open; call open() first")
        return self._pool

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> StateDocument:
        """Create the tables and the initial row if missing, read, start listening."""
        self._check_open()
        if self._pool is not None:
            return self.current
        initial = self._initial or initial_document(actor=self.actor, now=self._clock())
        initial = dataclasses.replace(initial, version=1)
        with self._errors("connecting"):
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                server_settings={"application_name": APP_NAME},
            )
        self._pool = pool
        try:
            with self._errors("creating the state tables"):
                async with pool.acquire(timeout=self.connect_timeout) as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
                    if not await conn.fetchval(_TABLES_EXIST):
                        await conn.execute(_DDL)
                    status = await conn.execute(_INSERT_INITIAL, to_json(initial))
            if status.endswith(" 1"):
                log.info("state_created", store=self.location)
            doc = await self._fetch()
        except BaseException:
            await pool.close()
            self._pool = None
            raise
        self._publish(doc)
        self._first_listen = asyncio.Event()
        self._watch_task = asyncio.create_task(self._watch(), name="state-watch postgresql")
        # Usually the listener is up before open() returns, so no write after it is
        # missed; if it cannot connect, the watcher polls until it can.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_listen.wait(), self.connect_timeout)
        log.info("state_store_opened", store=self.location, version=doc.version)
        return doc

    async def close(self) -> None:
        """Stop listening, mark own replicas stopped, release leaderships, close the pool."""
        if self._closed:
            return
        self._closing = True
        listener = self._listener
        if listener is not None and not listener.is_closed():
            try:
                await listener.close(timeout=2)
            except _DB_ERRORS:
                listener.terminate()
        for task in (self._watch_task, self._refresh_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._replica_ids and self._pool is not None:
            try:
                with self._errors("marking replicas stopped"):
                    await self._pool.execute(_STOP_REPLICAS, sorted(self._replica_ids), timeout=2)
            except StateError as exc:
                log.warning("state_replica_stop_failed", error=str(exc))
        await self._release_all()
        if self._spare is not None:
            spare, self._spare = self._spare, None
            try:
                await spare.close(timeout=2)
            except _DB_ERRORS:
                spare.terminate()
        self._closed = True
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except (TimeoutError, *_DB_ERRORS):
                self._pool.terminate()
            self._pool = None

    # ----------------------------------------------------------------- document

    async def read(self) -> StateDocument:
        """Read the row now (publishing the document if it is newer)."""
        self._check_open()
        doc = await self._fetch()
        self._publish(doc)
        return doc

    async def _fetch(self) -> StateDocument:
        pool = self._require_pool()
        row = await self._idempotent("reading the state", lambda: pool.fetchrow(_SELECT))
        if row is None:
            raise StateError(
                f"state store {self.location}: table bluegreen_state has no row. "
                "Restore it from a backup, or restart a replica to create a fresh one"
            )
        try:
            doc = from_json(row["document"])
        except StateError as exc:
            raise StateError(f"state store {self.location}: bluegreen_state: {exc}") from None
        if doc.version != row["version"]:
            raise StateError(
                f"state store {self.location}: bluegreen_state.version is {row['version']} "
                f"but the document says {doc.version}; the row was edited by hand"
            )
        return doc

    async def _compare_and_set(self, expected_version: int, new: StateDocument) -> StateDocument:
        pool = self._require_pool()
        stored = dataclasses.replace(new, version=expected_version + 1)
        payload = to_json(stored)
        try:
            row = await pool.fetchrow(_CAS, expected_version, payload, CHANNEL)
        except _SESSION_LOST:
            # Ambiguous: the session died around the write. Look at what is stored
            # instead of guessing; a blind retry could apply a change twice.
            await self._renew_sessions()
            found = await self._fetch()
            if found.version == expected_version + 1 and found == stored:
                return stored  # it committed
            if found.version != expected_version:
                raise StateConflictError(expected_version, found.version) from None
            with self._errors("writing the state"):
                row = await pool.fetchrow(_CAS, expected_version, payload, CHANNEL)
        except _DB_ERRORS as exc:
            raise self._state_error("writing the state", exc) from exc
        if row is None:
            found_version = await self._idempotent(
                "reading the state version", lambda: pool.fetchval(_SELECT_VERSION)
            )
            raise StateConflictError(expected_version, int(found_version or 0))
        return stored

    # ----------------------------------------------------------------- watching

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            version = int(payload)
        except ValueError:
            version = None
        current = self._current
        if version is not None and current is not None and version <= current.version:
            return  # our own write, already published
        self._schedule_refresh()

    def _schedule_refresh(self) -> None:
        """Fetch the document soon; coalesces bursts of notifications into few reads."""
        if self._closing:
            return
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.create_task(self._refresh_loop(), name="state-refresh")
        else:
            self._refresh_again = True

    async def _refresh_loop(self) -> None:
        while True:
            self._refresh_again = False
            await self._poll_once()
            if not self._refresh_again:
                return

    async def _poll_once(self) -> bool:
        """Fetch and publish; never raises (failures are logged once per outage)."""
        try:
            doc = await self._fetch()
        except StateError as exc:
            if not self._poll_failing and not self._closing:
                log.warning("state_poll_failed", store=self.location, error=str(exc))
            self._poll_failing = True
            return False
        except Exception:  # a background task must survive even a bug
            log.exception("state_poll_crashed", store=self.location)
            return False
        if self._poll_failing:
            log.info("state_poll_recovered", store=self.location, version=doc.version)
            self._poll_failing = False
        self._publish(doc)
        return True

    async def _watch(self) -> None:
        """Keep a listener connection; poll while it is down. Runs until cancelled."""
        delay = self.reconnect_initial
        while True:
            try:
                had_connection = await self._listen()
            except Exception:  # the watcher must survive anything
                log.exception("state_watch_failed", store=self.location)
                had_connection = False
            if self._first_listen is not None:
                self._first_listen.set()
            if self._closing:
                return
            if had_connection:
                delay = self.reconnect_initial
            # Jitter keeps many replicas from reconnecting in lockstep after an outage.
            await self._poll_for(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.reconnect_max)

    async def _poll_for(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            await self._poll_once()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(self.poll_interval, remaining))

    async def _listen(self) -> bool:
        """Hold one listener connection until it is lost; True if it was established."""
        try:
            conn = await self._connect(LISTENER_APP_NAME)
        except _DB_ERRORS as exc:
            if not self._listener_down:
                log.warning(
                    "state_listener_down",
                    store=self.location,
                    error=str(self._state_error("listening", exc)),
                )
            self._listener_down = True
            return False
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            self._listener = conn
            if self._listener_down:
                log.info("state_listener_reconnected", store=self.location)
            self._listener_down = False
            if self._first_listen is not None:
                self._first_listen.set()
            await self._poll_once()  # catch up on anything written while not listening
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), self.keepalive_interval)
                except TimeoutError:
                    # Notices a connection that died without a FIN, and doubles as
                    # a safety-net poll.
                    version = await conn.fetchval(_SELECT_VERSION, timeout=self.command_timeout)
                    current = self._current
                    if version is not None and (current is None or version > current.version):
                        self._schedule_refresh()
            if not self._closing:
                log.warning("state_listener_lost", store=self.location)
        except _DB_ERRORS as exc:
            if not self._closing:
                log.warning("state_listener_lost", store=self.location, error=type(exc).__name__)
        finally:
            self._listener = None
            if not conn.is_closed():
                conn.terminate()
        self._listener_down = not self._closing
        return True

    # ----------------------------------------------------------------- replicas

    async def _heartbeat(self, replica: ReplicaInfo) -> None:
        pool = self._require_pool()
        info = json.dumps(replica_info_to_dict(replica))
        await self._idempotent(
            "writing the heartbeat",
            lambda: pool.execute(_HEARTBEAT, replica.id, replica.applied_version, info),
        )

    async def replicas(self) -> list[ReplicaStatus]:
        """Replicas seen within the retention; ``alive`` by the database's clock."""
        pool = self._require_pool()
        retention = float(self.dead_retention)
        rows = await self._idempotent("listing replicas", lambda: pool.fetch(_REPLICAS, retention))
        statuses: list[ReplicaStatus] = []
        for row in rows:
            try:
                info = replica_info_from_dict(json.loads(row["info"]))
            except (ValueError, InvalidFieldError) as exc:
                log.warning("state_heartbeat_unreadable", replica=row["id"], error=str(exc))
                continue
            statuses.append(
                self._replica_status(
                    info,
                    format_time(row["heartbeat_at"]),
                    float(row["age"]),
                    stopped=row["stopped_at"] is not None,
                )
            )
        return statuses

    # ----------------------------------------------------------------- leadership

    async def _acquire_leadership(self, name: str) -> Leadership | None:
        self._require_pool()
        key = _advisory_key(f"leader:{name}")
        # Followers retry every few seconds; one spare session serves all their
        # attempts instead of a new connection each time. It holds no lock until
        # an attempt succeeds, and then it becomes the leader's session.
        conn = self._spare
        self._spare = None
        if conn is None or conn.is_closed():
            with self._errors("connecting for leadership"):
                conn = await self._connect(LEADER_APP_NAME)
        try:
            with self._errors("taking the leader lock"):
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        except BaseException:
            conn.terminate()
            raise
        if not got:
            if self._closing:
                conn.terminate()
            else:
                self._spare = conn
            return None
        return PostgresLeadership(
            name,
            self.location,
            conn,
            keepalive_interval=self.keepalive_interval,
            command_timeout=self.command_timeout,
        )


class PostgresLeadership(Leadership):
    """A session-level advisory lock held on a dedicated connection."""

    def __init__(
        self,
        name: str,
        location: str,
        conn: asyncpg.Connection,
        *,
        keepalive_interval: float,
        command_timeout: float,
    ) -> None:
        super().__init__(name, location)
        self._conn = conn
        self._keepalive_interval = keepalive_interval
        self._command_timeout = command_timeout
        conn.add_termination_listener(self._on_terminated)
        self._task = asyncio.create_task(self._keepalive(), name=f"leader-keepalive {name}")

    @property
    def backend_pid(self) -> int:
        """The server process holding the lock (for operators and tests)."""
        pid: int = self._conn.get_server_pid()
        return pid

    def _on_terminated(self, _conn: Any) -> None:
        self._mark_lost("database session ended")

    async def _keepalive(self) -> None:
        """Notice a session that died silently; the lock went with it."""
        while self.held:
            await asyncio.sleep(self._keepalive_interval)
            try:
                await self._conn.fetchval("SELECT 1", timeout=self._command_timeout)
            except _DB_ERRORS as exc:
                self._mark_lost(f"keepalive failed: {type(exc).__name__}")
                self._conn.terminate()
                return

    async def _release(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._conn.remove_termination_listener(self._on_terminated)
        if self._conn.is_closed():
            return
        try:
            await self._conn.close(timeout=2)  # ending the session releases the lock
        except _DB_ERRORS:
            self._conn.terminate()
