"""Locks: the runner's advisory lock, lock timeouts, and who blocks a waiting DDL.

* One runner at a time: a *session-level* advisory lock, held by a dedicated
  connection for the whole run (so it outlives the transactions of the work
  connection, and vanishes with the session if the runner dies).
* A DDL statement waits for its table lock at most ``lock_timeout``. While it
  waits, every query that arrives after it queues behind it, which is how a
  one-millisecond ``ALTER TABLE`` stalls an application for as long as some
  old transaction stays open. With ``lock_timeout`` the wait is bounded, the
  queue drains, and the runner retries later.
* When a statement gives up, the error names the backends that blocked it.
  They are sampled from the lock connection *while* the statement waits
  (``pg_blocking_pids``); once the wait ends they cannot be found any more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import asyncpg

from bluegreen.errors import RunnerLockError

#: The advisory lock key every bluegreen runner takes ("bluegrn" in ASCII).
RUNNER_LOCK_KEY: Final = int.from_bytes(b"bluegrn", "big")

#: SQLSTATEs that mean "could not get a lock in time", retried with backoff.
LOCK_NOT_AVAILABLE: Final = "55P03"
DEADLOCK_DETECTED: Final = "40P01"


def is_lock_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's lock_timeout (55P03) or deadlock (40P01) error."""
    return isinstance(
        exc, asyncpg.exceptions.LockNotAvailableError | asyncpg.exceptions.DeadlockDetectedError
    )


def ms(seconds: float) -> str:
    """A duration as a PostgreSQL setting value in milliseconds (0 = no limit)."""
    return f"{max(0, round(seconds * 1000))}ms"


def human_seconds(seconds: float | None) -> str:
    """``850ms``, ``12.5s``, ``3m05s``, ``2h01m``."""
    if seconds is None:
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


async def set_timeouts(
    conn: asyncpg.Connection, *, lock_timeout: float, statement_timeout: float
) -> None:
    """Set the session's ``lock_timeout`` and ``statement_timeout``."""
    await conn.execute(
        "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)",
        ms(lock_timeout),
        ms(statement_timeout),
    )


# --------------------------------------------------------------------------- runner lock


@dataclass(frozen=True, slots=True)
class LockHolder:
    """A session holding the runner lock."""

    pid: int
    application_name: str
    user: str | None
    client: str | None
    connected_since: Any  # datetime
    state: str | None

    def describe(self) -> str:
        """One line for an error message."""
        app = self.application_name or "no application_name"
        client = f" from {self.client}" if self.client else ""
        return (
            f"server pid {self.pid} ({app}, user {self.user}{client}, "
            f"connected since {self.connected_since:%Y-%m-%d %H:%M:%S %Z}, state {self.state})"
        )


async def runner_lock_holders(conn: asyncpg.Connection) -> list[LockHolder]:
    """Sessions holding the runner lock in this database (normally zero or one)."""
    records = await conn.fetch(
        """
        SELECT a.pid, a.application_name, a.usename, a.client_addr::text AS client,
               a.backend_start, a.state
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1
        """,
        (RUNNER_LOCK_KEY >> 32) & 0xFFFFFFFF,
        RUNNER_LOCK_KEY & 0xFFFFFFFF,
    )
    return [
        LockHolder(
            r["pid"],
            r["application_name"],
            r["usename"],
            r["client"],
            r["backend_start"],
            r["state"],
        )
        for r in records
    ]


async def acquire_runner_lock(
    conn: asyncpg.Connection,
    *,
    wait: float,
    on_wait: Callable[[list[LockHolder]], None] | None = None,
    describe_activity: Callable[[], Awaitable[str]] | None = None,
) -> None:
    """Take the runner lock, retrying for up to ``wait`` seconds.

    Raises :class:`RunnerLockError` naming the holder (and, through
    ``describe_activity``, what it is running) if it is still taken.
    ``pg_try_advisory_lock`` in a loop (not ``pg_advisory_lock``) keeps the
    wait bounded and cancellable.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    announced = False
    interval = 0.05
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RUNNER_LOCK_KEY):
            return
        holders = await runner_lock_holders(conn)
        if not announced and on_wait is not None:
            on_wait(holders)
            announced = True
        remaining = deadline - loop.time()
        if remaining <= 0:
            who = "; ".join(h.describe() for h in holders) or "a session that just released it"
            doing = await describe_activity() if describe_activity is not None else ""
            raise RunnerLockError(
                f"another migration runner holds the lock: {who}{doing}. Waited "
                f"{human_seconds(wait)}; wait for it to finish (or raise --lock-wait). If that "
                "runner is stuck, end its session with pg_terminate_backend(pid)."
            )
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, 0.5)


async def release_runner_lock(conn: asyncpg.Connection) -> None:
    """Release the runner lock (closing the session releases it too)."""
    await conn.execute("SELECT pg_advisory_unlock($1)", RUNNER_LOCK_KEY)


# --------------------------------------------------------------------------- blockers


@dataclass(frozen=True, slots=True)
class Blocker:
    """A backend that a waiting statement queues behind."""

    pid: int
    state: str | None
    query: str | None
    application_name: str | None
    user: str | None
    transaction_age: float | None  # seconds since its transaction began
    state_age: float | None  # seconds in its current state
    holds: str | None  # locks it holds on the relations the statement waits for

    def describe(self) -> str:
        """One line for an error or a retry message."""
        query = " ".join((self.query or "").split())
        if len(query) > 120:
            query = query[:119] + "…"
        parts = [f"pid {self.pid}", f"state {self.state or '?'}"]
        if self.transaction_age is not None:
            parts.append(f"transaction open {human_seconds(self.transaction_age)}")
        if self.application_name:
            parts.append(f"application {self.application_name}")
        if self.user:
            parts.append(f"user {self.user}")
        if self.holds:
            parts.append(f"holds {self.holds}")
        return f"{', '.join(parts)}: {query or '<no query>'}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "pid": self.pid,
            "state": self.state,
            "query": self.query,
            "application_name": self.application_name,
            "user": self.user,
            "transaction_age_seconds": self.transaction_age,
            "state_age_seconds": self.state_age,
            "holds": self.holds,
        }


_BLOCKERS: Final = """
SELECT b.pid, b.state, b.query, b.application_name, b.usename,
       extract(epoch FROM clock_timestamp() - b.xact_start)::float8 AS xact_age,
       extract(epoch FROM clock_timestamp() - b.state_change)::float8 AS state_age,
       (SELECT string_agg(DISTINCT h.mode || ' on ' || h.relation::regclass::text, ', ')
          FROM pg_locks h
         WHERE h.pid = b.pid AND h.granted AND h.locktype = 'relation'
           AND h.relation IN (SELECT relation FROM pg_locks
                               WHERE pid = w.pid AND NOT granted AND relation IS NOT NULL)
       ) AS holds
FROM pg_stat_activity w
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
JOIN pg_stat_activity b ON b.pid = bp.pid
WHERE w.pid = $1 AND w.wait_event_type = 'Lock'
ORDER BY b.xact_start NULLS LAST
"""


async def blockers_of(conn: asyncpg.Connection, pid: int) -> list[Blocker]:
    """The backends ``pid`` is waiting for right now (empty if it is not waiting on a lock)."""
    records = await conn.fetch(_BLOCKERS, pid)
    return [
        Blocker(
            r["pid"],
            r["state"],
            r["query"],
            r["application_name"],
            r["usename"],
            r["xact_age"],
            r["state_age"],
            r["holds"],
        )
        for r in records
    ]


class BlockerWatch:
    """Samples who blocks ``pid`` while a statement runs; keeps the latest non-empty sample.

    Polls from a connection that is otherwise idle (the lock connection). The
    poll stops between queries, never in the middle of one, so the connection
    stays usable.
    """

    def __init__(self, conn: asyncpg.Connection, pid: int, *, interval: float) -> None:
        self._conn = conn
        self._pid = pid
        self._interval = interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.latest: list[Blocker] = []
        self.error: BaseException | None = None

    async def __aenter__(self) -> BlockerWatch:
        self._task = asyncio.create_task(self._run(), name="bluegreen-blocker-watch")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            # let the in-flight poll end so the connection stays usable, then propagate
            await self._task
            raise

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            if self._stop.is_set():
                return
            try:
                sample = await blockers_of(self._conn, self._pid)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                self.error = exc  # the watch is best effort; the statement goes on
                return
            if sample:
                self.latest = sample
