"""The migration runner: applies and rolls back migration files on PostgreSQL.

Theory of operation
-------------------
``apply`` / ``rollback`` open two plain asyncpg connections (never through a
transaction-pooling PgBouncer: the advisory lock, ``SET lock_timeout`` and
statements outside transactions all need one real session):

* the **lock connection** takes the session-level advisory lock that keeps
  two runners apart, and watches which backends block a waiting statement;
* the **work connection** runs the statements and writes the history.

Under the lock the runner (1) marks ``running`` rows left by a dead runner as
``interrupted``, (2) reads files and history and lets :mod:`plan` decide what
to run, (3) parses every selected file and lints it, so nothing runs unless
everything is runnable, then (4) runs each migration step by step: insert a
``running`` row, forget the saved progress of the *other* section's unfinished
backfills (after a down has reset the data, an up must not resume halfway),
run each step under ``lock_timeout`` with retries, count it in the history
(inside its transaction when it has one), finish the row. A down section with
only comments has no steps: the row is finished at once.

The decisions (selection, grouping, resume points, backoff) are pure
functions in :mod:`bluegreen.migrations.plan`; this module only executes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bluegreen.errors import (
    HazardError,
    MigrationConnectError,
    MigrationError,
    MigrationLockTimeoutError,
    MigrationStatementError,
    RunnerLockError,
    UsageError,
)
from bluegreen.migrations import history, locking
from bluegreen.migrations.events import (
    BackfillProgressed,
    Event,
    InvalidIndexDropped,
    InvalidIndexKept,
    LockRetry,
    MigrationFinished,
    MigrationStarted,
    Note,
    RunnerLockWaiting,
    ServerNotice,
    StaleRunRecovered,
    StatementStarted,
    StepFinished,
    StepSkipped,
    StepStarted,
)
from bluegreen.migrations.files import MigrationFile, Phase, load_directory
from bluegreen.migrations.history import RunnerIdentity
from bluegreen.migrations.locking import Blocker, BlockerWatch, human_seconds
from bluegreen.migrations.metrics import observe_migration
from bluegreen.migrations.plan import (
    Direction,
    HistoryRow,
    LockSummary,
    MigrationStatus,
    Outcome,
    Plan,
    Problem,
    Selected,
    Severity,
    Step,
    StepKind,
    TableEstimate,
    analyse,
    backfill_key,
    backoff_delay,
    describe_progress,
    migration_steps,
    nothing_to_run,
    plan_migration,
    problems,
    select_down,
    select_up,
    split_backfill_key,
    step_timeouts,
    summarize_sql,
    tables_of,
)
from bluegreen.migrations.sql import Statement

T = TypeVar("T")
EventCallback = Callable[[Event], None]

DEFAULT_APPLICATION_NAME: Final = "bluegreen-migrate"


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How the runner treats locks and time. Durations are seconds; 0 = no limit."""

    lock_timeout: float = 2.0
    lock_retries: int = 5
    statement_timeout: float = 60.0
    # Statements outside transactions (CREATE INDEX CONCURRENTLY, VACUUM...) do
    # not block the application, and a big index takes as long as it takes.
    standalone_statement_timeout: float = 0.0
    # lock_timeout for those of them whose lock blocks neither reads nor writes
    # (CONCURRENTLY, VACUUM): their waits for older transactions stall nobody.
    nonblocking_lock_timeout: float = 300.0
    lock_wait: float = 30.0  # how long to wait for another runner's lock
    retry_base: float = 0.5
    retry_cap: float = 10.0
    connect_timeout: float = 10.0
    application_name: str = DEFAULT_APPLICATION_NAME

    def __post_init__(self) -> None:
        for name in (
            "lock_timeout",
            "statement_timeout",
            "standalone_statement_timeout",
            "nonblocking_lock_timeout",
            "lock_wait",
            "retry_base",
            "retry_cap",
            "connect_timeout",
        ):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', '-')} must not be negative")
        if self.lock_retries < 0:
            raise UsageError("lock-retries must not be negative")


@dataclass(frozen=True, slots=True)
class MigrationRun:
    """What happened to one migration in a run."""

    version: int
    label: str
    phase: str
    direction: Direction
    outcome: Outcome
    seconds: float
    steps_total: int
    steps_done: int
    resumed_from: int = 0
    error: str | None = None
    sqlstate: str | None = None
    blockers: tuple[Blocker, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "version": self.version,
            "label": self.label,
            "phase": self.phase,
            "direction": self.direction.value,
            "outcome": self.outcome.value,
            "seconds": round(self.seconds, 3),
            "steps_total": self.steps_total,
            "steps_done": self.steps_done,
            "resumed_from": self.resumed_from,
            "error": self.error,
            "sqlstate": self.sqlstate,
            "blockers": [b.to_dict() for b in self.blockers],
        }


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of ``apply`` or ``rollback``."""

    direction: Direction
    runs: tuple[MigrationRun, ...] = ()
    recovered: tuple[HistoryRow, ...] = ()  # rows of a dead runner, marked interrupted
    error: MigrationError | None = None
    hazards: tuple[Any, ...] = ()  # lint findings that stopped the run
    current_version: int | None = None

    @property
    def ok(self) -> bool:
        """Whether everything asked for was done."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "direction": self.direction.value,
            "migrations": [r.to_dict() for r in self.runs],
            "recovered": [r.to_dict() for r in self.recovered],
            "error": None
            if self.error is None
            else {"type": type(self.error).__name__, "message": str(self.error)},
            "hazards": [finding_to_dict(f) for f in self.hazards],
            "current_version": self.current_version,
        }


def finding_to_dict(finding: Any) -> dict[str, Any]:
    """A lint finding as JSON (the linter's own ``to_dict`` when it has one)."""
    to_dict = getattr(finding, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    keys = ("rule_id", "path", "line", "statement", "message", "lock", "blocks", "rewrites")
    return {k: _plain(getattr(finding, k, None)) for k in (*keys, "why", "help")}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# --------------------------------------------------------------------------- connections


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable database URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def connect(
    database_url: str, *, application_name: str, connect_timeout: float = 10.0
) -> asyncpg.Connection:
    """A direct connection, errors translated to :class:`MigrationConnectError`."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            database_url,
            timeout=connect_timeout,
            server_settings={"application_name": application_name},
            statement_cache_size=0,  # DDL changes what cached plans would refer to
        )
    except ValueError as exc:
        raise UsageError(f"invalid database URL {safe_url(database_url)}: {exc}") from exc
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise MigrationConnectError(
            f"cannot connect to {safe_url(database_url)}: {exc}. Check --database-url or "
            "DATABASE_URL, and that the server accepts connections"
        ) from exc
    return conn


async def _close(conn: asyncpg.Connection | None) -> None:
    if conn is None or conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), 5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()


def _server_version_num(conn: asyncpg.Connection) -> int:
    v = conn.get_server_version()
    return int(v.major) * 10000 + int(v.minor) if v.major >= 10 else int(v.major) * 10000


# --------------------------------------------------------------------------- the runner


class _Runner:
    """One run: two connections, the lock, and the steps."""

    def __init__(
        self,
        database_url: str,
        directory: Path,
        options: RunOptions,
        on_event: EventCallback | None,
    ) -> None:
        self.url = database_url
        self.directory = directory
        self.options = options
        self._on_event = on_event
        self.identity = RunnerIdentity.current()
        self.work: asyncpg.Connection | None = None
        self.lock: asyncpg.Connection | None = None
        self.server_version_num = 0
        self.work_pid = 0
        self.locked = False
        self._label: str | None = None
        self._statement: Statement | None = None
        self._blockers: tuple[Blocker, ...] = ()
        self._last_failed: MigrationRun | None = None
        self._random = random.Random()  # jitter only

    # ---- plumbing

    def emit(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def _notice(self, _conn: Any, message: Any) -> None:
        severity = getattr(message, "severity", "NOTICE")
        self.emit(ServerNotice(self._label, str(severity), str(getattr(message, "message", ""))))

    @property
    def w(self) -> asyncpg.Connection:
        assert self.work is not None  # noqa: S101 - set by open()
        return self.work

    @property
    def lk(self) -> asyncpg.Connection:
        assert self.lock is not None  # noqa: S101 - set by open()
        return self.lock

    async def open(self, *, take_lock: bool) -> None:
        name = self.options.application_name
        timeout = self.options.connect_timeout
        self.work = await connect(self.url, application_name=name, connect_timeout=timeout)
        self.server_version_num = _server_version_num(self.work)
        self.work_pid = self.work.get_server_pid()
        self.work.add_log_listener(self._notice)
        if self.server_version_num >= 140000:
            # a killed runner's statement is cancelled within a second instead of
            # running on until it tries to send its result
            await self.work.execute("SET client_connection_check_interval = '1s'")
        if not take_lock:
            return
        self.lock = await connect(
            self.url, application_name=f"{name} (lock)", connect_timeout=timeout
        )
        await self.lock.execute("SET statement_timeout = '30s'")
        await locking.acquire_runner_lock(
            self.lock,
            wait=self.options.lock_wait,
            on_wait=lambda holders: self.emit(
                RunnerLockWaiting(tuple(holders), self.options.lock_wait)
            ),
            describe_activity=self._running_rows_text,
        )
        self.locked = True

    async def close(self) -> None:
        try:
            if self.lock is not None and self.locked and not self.lock.is_closed():
                # closing the session releases it anyway
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await locking.release_runner_lock(self.lock)
            await _close(self.work)
            await _close(self.lock)
        finally:
            # Cancelled half-way: end the rest without awaiting, so that no session
            # (and so no runner lock) outlives the run.
            for conn in (self.work, self.lock):
                if conn is not None and not conn.is_closed():
                    conn.terminate()

    async def _running_rows_text(self) -> str:
        rows = await history.read_rows(self.lk)
        running = [r for r in rows if r.outcome is Outcome.RUNNING]
        return "".join(
            f"; it is running {r.label} ({r.direction}) since "
            f"{r.started_at:%Y-%m-%d %H:%M:%S %Z}, started by {r.run_by}"
            for r in running
        )

    def _check_lock_alive(self) -> None:
        if self.lock is None or self.lock.is_closed():
            raise MigrationConnectError(
                "lost the connection that holds the runner lock; stopping so that two runners "
                "never overlap. Re-run to continue where this one stopped"
            )

    # ---- reading state

    async def load(self) -> tuple[list[MigrationFile], list[HistoryRow], list[MigrationStatus]]:
        files = load_directory(self.directory)
        rows = await history.read_rows(self.w)
        live = await history.live_backends(self.w, rows)
        return files, rows, analyse(files, rows, live_backends=live)

    async def recover_stale(self) -> list[HistoryRow]:
        """Mark ``running`` rows of dead runners ``interrupted`` (lock held)."""
        rows = await history.read_rows(self.w)
        recovered = []
        for row in rows:
            if row.outcome is not Outcome.RUNNING:
                continue
            await self._wait_backend_gone(row)
            reason = (
                f"the runner ({row.run_by}, pid {row.runner_pid}) stopped before finishing; "
                f"{describe_progress(row)}"
            )
            await history.mark_interrupted(self.w, row.id, reason)
            marked = dataclasses.replace(row, outcome=Outcome.INTERRUPTED, error=reason)
            recovered.append(marked)
            self.emit(StaleRunRecovered(marked))
        return recovered

    async def _wait_backend_gone(self, row: HistoryRow) -> None:
        """Wait (bounded) for a dead runner's server backend to end its statement."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.lock_wait
        announced = False
        while await history.live_backends(self.w, [row]):
            if not announced:
                self.emit(
                    Note(
                        f"{row.label}: the runner that was running it is gone but its server "
                        f"backend (pid {row.backend_pid}) is still busy; waiting for it to end",
                        row.label,
                    )
                )
                announced = True
            if loop.time() >= deadline:
                raise RunnerLockError(
                    f"{row.label}: server pid {row.backend_pid} is still running a statement "
                    f"for a runner that stopped ({row.run_by}, pid {row.runner_pid}). Wait for "
                    f"it, or cancel it with SELECT pg_cancel_backend({row.backend_pid}), then "
                    "run again",
                    migration=row.label,
                )
            await asyncio.sleep(0.2)

    # ---- running

    def prepare(self, selected: Sequence[Selected]) -> list[tuple[Selected, tuple[Step, ...]]]:
        """Parse and group every selected file (and its backfills) before anything runs."""
        prepared = []
        for sel in selected:
            steps = migration_steps(
                sel.migration, sel.direction, server_version_num=self.server_version_num
            )
            for step in steps:
                if step.kind is StepKind.BACKFILL:
                    self._backfill_spec(sel.migration, step, sel.direction)  # validates it
            prepared.append((sel, steps))
        return prepared

    def _backfill_spec(self, m: MigrationFile, step: Step, direction: Direction) -> Any:
        from bluegreen.migrations.backfill import BackfillSpec

        # the down section's backfills keep their own saved progress
        return BackfillSpec.from_statement(
            step.statements[0], backfill_key(m.label, direction), step.number, source=str(m.path)
        )

    async def _forget_other_direction_backfills(
        self, m: MigrationFile, direction: Direction
    ) -> None:
        """Forget the saved progress of the other section's unfinished backfills.

        Before a down, whatever it contains: the down may reset the data the up's
        backfill wrote (a hand-written ``UPDATE ... SET col = NULL``), so a later up
        must walk the whole table again instead of resuming halfway and skipping
        rows. Before an up, the same for the down's backfills. A section's own saved
        progress stays: a rerun of that section resumes it.
        """
        from bluegreen.migrations.backfill import clear_progress

        other = Direction.UP if direction is Direction.DOWN else Direction.DOWN
        forgotten = await clear_progress(self.w, backfill_key(m.label, other))
        if forgotten:
            self.emit(
                Note(
                    f"{m.label}: forgot the saved progress of {forgotten} unfinished "
                    f"backfill(s) of its {other.value} section; the next {other.value} starts "
                    "them from the beginning",
                    m.label,
                )
            )

    def _timeouts(self, m: MigrationFile, step: Step) -> tuple[float, float]:
        return step_timeouts(m, step, self.options)

    async def run_migration(self, sel: Selected, steps: tuple[Step, ...]) -> MigrationRun:
        """Run one migration from its resume point; records everything in the history."""
        m = sel.migration
        self._check_lock_alive()
        self._label = m.label
        loop = asyncio.get_running_loop()
        started = loop.time()
        final = Outcome.APPLIED if sel.direction is Direction.UP else Outcome.ROLLED_BACK
        metric_name = m.label if sel.direction is Direction.UP else f"{m.label}:down"
        row_id = await history.start(
            self.w,
            m,
            sel.direction,
            steps_total=len(steps),
            steps_done=sel.resume_from,
            identity=self.identity,
            backend_pid=self.work_pid,
        )
        self.emit(
            MigrationStarted(m.label, m.phase.value, sel.direction, len(steps), sel.resume_from)
        )
        for note in sel.notes:
            self.emit(Note(note, m.label))
        if not steps:
            self.emit(Note(nothing_to_run(m, sel.direction), m.label))
        done = sel.resume_from
        self._blockers = ()
        self._last_failed = None
        try:
            await self._forget_other_direction_backfills(m, sel.direction)
            if sel.resume_from >= len(steps):
                await history.finish(self.w, row_id, final)
            for step in steps:
                if step.number <= sel.resume_from:
                    self.emit(StepSkipped(m.label, step, "committed by an earlier attempt"))
                    continue
                self._check_lock_alive()
                self._statement = None
                self._blockers = ()
                await history.set_current_step(self.w, row_id, step.number)
                self.emit(StepStarted(m.label, step, len(steps)))
                step_started = loop.time()
                last = final if step.number == len(steps) else None
                attempts = await self._run_step(sel, step, row_id, last)
                done = step.number
                self.emit(StepFinished(m.label, step, loop.time() - step_started, attempts))
        except BaseException as exc:
            seconds = loop.time() - started
            error = self._translate(exc, m)
            interrupted = not isinstance(exc, Exception)  # cancelled, Ctrl-C
            outcome = Outcome.INTERRUPTED if interrupted else Outcome.FAILED
            message = (
                str(error)
                if error is not None
                else f"cancelled (Ctrl-C, or by the caller) during step {done + 1} of "
                f"{len(steps)}; {done} step(s) committed"
            )
            await self._record_end(row_id, outcome, message)
            observe_migration(metric_name, "failure", seconds)
            self.emit(MigrationFinished(m.label, sel.direction, outcome, seconds, message))
            self._label = None
            if error is None:
                raise
            self._last_failed = MigrationRun(
                m.version,
                m.label,
                m.phase.value,
                sel.direction,
                outcome,
                seconds,
                len(steps),
                done,
                sel.resume_from,
                message,
                getattr(error, "sqlstate", None),
                self._blockers if isinstance(error, MigrationLockTimeoutError) else (),
            )
            if error is exc:
                raise
            raise error from exc
        seconds = loop.time() - started
        observe_migration(metric_name, "success", seconds)
        self.emit(MigrationFinished(m.label, sel.direction, final, seconds))
        self._label = None
        return MigrationRun(
            m.version,
            m.label,
            m.phase.value,
            sel.direction,
            final,
            seconds,
            len(steps),
            len(steps),
            sel.resume_from,
        )

    async def _record_end(self, row_id: int, outcome: Outcome, message: str) -> None:
        """Close the history row, on the work connection or, if that is gone, the lock one."""
        for conn in (self.work, self.lock):
            if conn is None or conn.is_closed():
                continue
            try:
                await asyncio.wait_for(history.finish(conn, row_id, outcome, message), 10)
                return
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                continue
        self.emit(
            Note(
                "could not record the outcome in the history table; the next run will mark "
                "this attempt interrupted",
                self._label,
            )
        )

    def _translate(self, exc: BaseException, m: MigrationFile) -> MigrationError | None:
        """The bluegreen error for ``exc`` (None: let it propagate as is)."""
        if isinstance(exc, MigrationError):
            return exc
        if not isinstance(exc, Exception):
            return None
        statement = self._statement
        where = f"{m.path}:{statement.line}" if statement is not None else str(m.path)
        what = f" ({summarize_sql(statement.text, 60)})" if statement is not None else ""
        if isinstance(exc, asyncpg.PostgresError):
            sqlstate = getattr(exc, "sqlstate", None)
            primary = getattr(exc, "message", None) or str(exc).split("\n", 1)[0]
            parts = [f"{where}: {m.label}{what} failed: {primary} (SQLSTATE {sqlstate})."]
            detail = getattr(exc, "detail", None)
            hint = getattr(exc, "hint", None)
            if detail:
                parts.append(f"DETAIL: {detail}")
            if hint:
                parts.append(f"HINT: {hint}")
            if sqlstate == "57014":
                parts.append(
                    "the statement hit statement_timeout; raise it with --statement-timeout "
                    "or '-- bluegreen:statement-timeout' in the file"
                )
            return MigrationStatementError(" ".join(parts), migration=m.label, sqlstate=sqlstate)
        if isinstance(exc, OSError | asyncpg.InterfaceError | TimeoutError):
            return MigrationConnectError(
                f"{where}: {m.label}: lost the database connection ({exc}); the history "
                "records how far it got. Re-run to resume",
                migration=m.label,
            )
        return None

    async def _run_step(self, sel: Selected, step: Step, row_id: int, final: Outcome | None) -> int:
        m = sel.migration
        lock_timeout, statement_timeout = self._timeouts(m, step)
        if step.kind is StepKind.TRANSACTION:

            async def in_transaction() -> None:
                await locking.set_timeouts(
                    self.w, lock_timeout=lock_timeout, statement_timeout=statement_timeout
                )
                async with self.w.transaction():
                    for statement in step.statements:
                        self._statement = statement
                        if len(step.statements) > 1:
                            self.emit(StatementStarted(m.label, step, statement))
                        await self.w.execute(statement.text)
                    await history.step_done(self.w, row_id, step.number, final)

            _, attempts = await self._with_lock_retries(m, step, lock_timeout, in_transaction)
            return attempts

        statement = step.statements[0]
        self._statement = statement
        if sel.inflight_step == step.number and await self._already_done(statement):
            self.emit(StepSkipped(m.label, step, "the interrupted attempt had finished it already"))
            await history.step_done(self.w, row_id, step.number, final)
            return 0

        if step.kind is StepKind.BACKFILL:
            spec = self._backfill_spec(m, step, sel.direction)

            async def backfill() -> Any:
                from bluegreen.migrations.backfill import run_backfill

                await locking.set_timeouts(
                    self.w, lock_timeout=lock_timeout, statement_timeout=statement_timeout
                )
                return await run_backfill(
                    self.w,
                    spec,
                    progress=lambda p: self.emit(BackfillProgressed(m.label, step.number, p)),
                    # without the runner lock another runner may start: stop between batches
                    should_stop=lambda: self.lock is None or self.lock.is_closed(),
                )

            _, attempts = await self._with_lock_retries(m, step, lock_timeout, backfill)
        else:
            attempts = await self._run_standalone(m, step, lock_timeout, statement_timeout)
        await history.step_done(self.w, row_id, step.number, final)
        return attempts

    async def _run_standalone(
        self, m: MigrationFile, step: Step, lock_timeout: float, statement_timeout: float
    ) -> int:
        statement = step.statements[0]
        builds_index = _can_leave_invalid_index(statement)
        scope = await _index_scope(self.w, statement) if builds_index else None
        if scope is not None and scope.name is not None:
            for index in await _invalid_indexes(self.w, scope, only_named=True):
                await self._drop_invalid(m, index, "before running the statement")
        before = set(await _invalid_indexes(self.w, scope)) if scope is not None else set()

        async def cleanup() -> None:
            if scope is None:
                return
            for index in await _invalid_indexes(self.w, scope):
                if index not in before:
                    await self._drop_invalid(m, index, "after the failed build")

        async def run() -> None:
            await locking.set_timeouts(
                self.w, lock_timeout=lock_timeout, statement_timeout=statement_timeout
            )
            await self.w.execute(statement.text)

        try:
            _, attempts = await self._with_lock_retries(m, step, lock_timeout, run, cleanup)
        except Exception:
            if scope is not None and not self.w.is_closed():
                try:
                    await cleanup()
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    self.emit(Note(f"could not look for INVALID indexes: {exc}", m.label))
            raise
        return attempts

    async def _drop_invalid(self, m: MigrationFile, index: str, when: str) -> None:
        try:
            # it waits for older transactions without blocking the application
            await locking.set_timeouts(
                self.w,
                lock_timeout=self.options.nonblocking_lock_timeout,
                statement_timeout=self.options.standalone_statement_timeout,
            )
            await self.w.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            self.emit(InvalidIndexKept(m.label, index, str(exc)))
            return
        self.emit(InvalidIndexDropped(m.label, index, when))

    async def _already_done(self, statement: Statement) -> bool:
        """Whether an interrupted standalone statement had in fact completed."""
        from pglast import ast

        node = statement.node
        if isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname:
            scope = await _index_scope(self.w, statement)
            if scope is None:
                return False
            valid = await self.w.fetchval(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = $1 AND c.relnamespace = $2",
                node.idxname,
                scope.namespace,
            )
            return bool(valid)
        if isinstance(node, ast.DropStmt) and node.concurrent:
            names = [".".join(getattr(p, "sval", "") for p in obj) for obj in node.objects or ()]
            for name in names:
                if await self.w.fetchval("SELECT to_regclass($1) IS NOT NULL", _quote_name(name)):
                    return False
            return True
        return False

    async def _with_lock_retries(
        self,
        m: MigrationFile,
        step: Step,
        lock_timeout: float,
        attempt_fn: Callable[[], Awaitable[T]],
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[T, int]:
        """Run ``attempt_fn``; on 55P03/40P01 back off and retry, naming the blockers."""
        max_attempts = self.options.lock_retries + 1
        interval = min(max(lock_timeout / 4, 0.02), 0.25) if lock_timeout else 0.25
        attempt = 0
        while True:
            attempt += 1
            self._check_lock_alive()
            watch = BlockerWatch(self.lk, self.work_pid, interval=interval)
            try:
                async with watch:
                    result = await attempt_fn()
                return result, attempt
            except (
                asyncpg.exceptions.LockNotAvailableError,
                asyncpg.exceptions.DeadlockDetectedError,
            ) as exc:
                blockers = tuple(watch.latest)
                self._blockers = blockers
                if cleanup is not None:
                    await cleanup()
                if attempt >= max_attempts:
                    raise self._lock_timeout_error(m, step, lock_timeout, attempt, exc) from exc
                delay = backoff_delay(
                    attempt,
                    base=self.options.retry_base,
                    cap=self.options.retry_cap,
                    rand=self._random.random(),
                )
                self.emit(
                    LockRetry(
                        m.label,
                        step,
                        attempt,
                        max_attempts,
                        delay,
                        lock_timeout,
                        str(exc.sqlstate),
                        blockers,
                    )
                )
                await asyncio.sleep(delay)

    def _lock_timeout_error(
        self,
        m: MigrationFile,
        step: Step,
        lock_timeout: float,
        attempts: int,
        exc: asyncpg.PostgresError,
    ) -> MigrationLockTimeoutError:
        statement = self._statement or step.statements[0]
        if self._blockers:
            who = " Blocked by: " + "; ".join(b.describe() for b in self._blockers) + "."
        else:
            who = " The blocking sessions ended before they could be identified."
        why = (
            f"could not get its lock within lock_timeout {human_seconds(lock_timeout)}"
            if exc.sqlstate == locking.LOCK_NOT_AVAILABLE
            else "kept deadlocking with other sessions"
        )
        return MigrationLockTimeoutError(
            f"{m.path}:{statement.line}: {m.label} step {step.number} "
            f"({summarize_sql(statement.text, 60)}) {why} in {attempts} attempt(s) "
            f"(SQLSTATE {exc.sqlstate}).{who} Application queries queued behind it for at "
            "most the lock timeout each time. End or wait for those transactions and run "
            "again, or raise --lock-retries / --lock-timeout.",
            migration=m.label,
        )


# --------------------------------------------------------------------------- invalid indexes


@dataclass(frozen=True, slots=True)
class _IndexScope:
    """Where a concurrent index statement can leave INVALID indexes."""

    table: int | None  # pg_class oid of the table
    namespace: int | None  # pg_namespace oid (schema-wide REINDEX, or the index's schema)
    name: str | None  # the index CREATE INDEX CONCURRENTLY builds


def _can_leave_invalid_index(statement: Statement) -> bool:
    """Whether a failed ``statement`` can leave an INVALID index behind."""
    from pglast import ast

    node = statement.node
    if isinstance(node, ast.IndexStmt):
        return bool(node.concurrent)
    return isinstance(node, ast.ReindexStmt)


def _rangevar_name(rv: Any) -> str:
    parts = [p for p in (rv.schemaname, rv.relname) if p]
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


async def _index_scope(conn: asyncpg.Connection, statement: Statement) -> _IndexScope | None:
    from pglast import ast

    node = statement.node
    if isinstance(node, ast.IndexStmt):
        record = await conn.fetchrow(
            "SELECT c.oid, c.relnamespace FROM pg_class c WHERE c.oid = to_regclass($1)",
            _rangevar_name(node.relation),
        )
        if record is None:
            return None
        return _IndexScope(record["oid"], record["relnamespace"], node.idxname)
    if isinstance(node, ast.ReindexStmt):
        kind = getattr(node.kind, "name", str(node.kind))
        if node.relation is not None:
            record = await conn.fetchrow(
                "SELECT coalesce(i.indrelid, c.oid) AS table_oid, c.relnamespace "
                "FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid "
                "WHERE c.oid = to_regclass($1)",
                _rangevar_name(node.relation),
            )
            if record is None:
                return None
            return _IndexScope(record["table_oid"], None, None)
        if kind.endswith("SCHEMA") and node.name:
            namespace = await conn.fetchval(
                "SELECT oid FROM pg_namespace WHERE nspname = $1", node.name
            )
            return _IndexScope(None, namespace, None) if namespace is not None else None
    return None


async def _invalid_indexes(
    conn: asyncpg.Connection, scope: _IndexScope, *, only_named: bool = False
) -> list[str]:
    """INVALID indexes in ``scope`` that no other session is building right now."""
    if only_named and scope.name is None:
        return []
    records = await conn.fetch(
        """
        SELECT format('%I.%I', n.nspname, c.relname) AS name
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class t ON t.oid = i.indrelid
        WHERE NOT i.indisvalid
          AND ($1::oid IS NULL OR i.indrelid = $1::oid)
          AND ($2::oid IS NULL OR t.relnamespace = $2::oid)
          AND ($3::text IS NULL OR (c.relname = $3::text AND c.relnamespace = t.relnamespace))
          AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                          WHERE p.index_relid = c.oid AND p.pid <> pg_backend_pid())
        ORDER BY 1
        """,
        scope.table,
        scope.namespace if scope.table is None else None,
        scope.name if only_named else None,
    )
    return [r["name"] for r in records]


# --------------------------------------------------------------------------- linting


def _lint(files: Sequence[MigrationFile], selected: Sequence[Selected]) -> list[Any]:
    """Findings of the linter on the up sections of ``selected``.

    Every file is linted in version order so that what earlier migrations did
    (a CHECK validated, a column's type) informs the later ones; only the
    selected files' findings are returned.
    """
    from bluegreen.migrations.lint.engine import lint_migrations

    return list(lint_migrations(files, only={sel.migration.version for sel in selected}))


def _check_rule_ids(rule_ids: Collection[str]) -> None:
    """A misspelt ``--allow-hazard`` would silently allow nothing: refuse it."""
    if not rule_ids:
        return
    from bluegreen.migrations.lint.rules import RULE_IDS

    unknown = sorted(set(rule_ids) - RULE_IDS)
    if unknown:
        raise UsageError(
            f"unknown lint rule {', '.join(unknown)} in --allow-hazard; "
            "'bluegreen migrate lint --rules' lists them"
        )


def _hazard_error(findings: Sequence[Any]) -> HazardError:
    rules = sorted({str(getattr(f, "rule_id", "?")) for f in findings})
    lines = []
    for f in findings:
        fmt = getattr(f, "format", None)
        lines.append(fmt() if callable(fmt) else str(f))
    allow = " ".join(f"--allow-hazard {r}" for r in rules)
    first = findings[0]
    return HazardError(
        f"the linter found {len(findings)} hazard(s) in the migrations to apply; nothing was "
        f"run. Fix them (each finding gives the safe alternative), silence one with "
        f"'-- bluegreen:ignore RULE reason', or accept them with {allow}\n" + "\n".join(lines),
        migration=Path(str(getattr(first, "path", ""))).stem or None,
    )


# --------------------------------------------------------------------------- public API


async def apply(
    database_url: str,
    directory: Path | str,
    *,
    phases: Collection[Phase | str] | None = None,
    to: int | None = None,
    allow_hazards: Collection[str] = (),
    allow_out_of_order: bool = False,
    lint: bool = True,
    options: RunOptions | None = None,
    on_event: EventCallback | None = None,
    raise_on_failure: bool = True,
) -> ApplyResult:
    """Apply pending migrations (up to version ``to``, of ``phases`` only if given).

    Lints first and refuses hazards whose rule is not in ``allow_hazards``.
    Stops at the first failure. With ``raise_on_failure`` (default) failures
    raise a :class:`MigrationError`; otherwise they are in ``result.error``.
    Setup problems (no database, the lock is taken, bad files) always raise.
    """
    opts = options or RunOptions()
    wanted = None if phases is None else frozenset(Phase(p) for p in phases)
    if to is not None and to < 0:
        raise UsageError(f"--to must be a version >= 0, got {to}")
    _check_rule_ids(allow_hazards)
    runner = _Runner(database_url, Path(directory), opts, on_event)
    try:
        await runner.open(take_lock=True)
        await history.ensure_table(runner.w)
        recovered = await runner.recover_stale()
        files, _, statuses = await runner.load()
        _warn_missing(runner, statuses)
        selected = select_up(statuses, to=to, phases=wanted, allow_out_of_order=allow_out_of_order)
        prepared = runner.prepare(selected)
        if lint and selected:
            findings = _lint(files, selected)
            allowed = set(allow_hazards)
            blocking = [f for f in findings if getattr(f, "rule_id", None) not in allowed]
            if blocking:
                error = _hazard_error(blocking)
                if raise_on_failure:
                    raise error
                return ApplyResult(
                    Direction.UP, (), tuple(recovered), error, tuple(blocking),
                    await history.current_version(runner.w),
                )  # fmt: skip
        return await _execute(runner, prepared, Direction.UP, recovered, raise_on_failure)
    finally:
        await runner.close()


async def rollback(
    database_url: str,
    directory: Path | str,
    *,
    to: int | None = None,
    options: RunOptions | None = None,
    on_event: EventCallback | None = None,
    raise_on_failure: bool = True,
) -> ApplyResult:
    """Run down sections, newest first: every applied migration above ``to``, or the newest.

    Refuses (before running anything) when one of them is irreversible.
    """
    opts = options or RunOptions()
    if to is not None and to < 0:
        raise UsageError(f"--to must be a version >= 0, got {to}")
    runner = _Runner(database_url, Path(directory), opts, on_event)
    try:
        await runner.open(take_lock=True)
        await history.ensure_table(runner.w)
        recovered = await runner.recover_stale()
        _, _, statuses = await runner.load()
        selected = select_down(statuses, to=to)
        prepared = runner.prepare(selected)
        return await _execute(runner, prepared, Direction.DOWN, recovered, raise_on_failure)
    finally:
        await runner.close()


def _warn_missing(runner: _Runner, statuses: Sequence[MigrationStatus]) -> None:
    for p in problems(statuses):
        if p.kind == "missing_file":
            runner.emit(Note(p.message, p.label))


async def _execute(
    runner: _Runner,
    prepared: Sequence[tuple[Selected, tuple[Step, ...]]],
    direction: Direction,
    recovered: Sequence[HistoryRow],
    raise_on_failure: bool,
) -> ApplyResult:
    runs: list[MigrationRun] = []
    error: MigrationError | None = None
    for sel, steps in prepared:
        try:
            runs.append(await runner.run_migration(sel, steps))
        except MigrationError as exc:
            if runner._last_failed is not None:
                runs.append(runner._last_failed)
            error = exc
            break
    version = None
    if runner.work is not None and not runner.work.is_closed():
        try:
            version = await history.current_version(runner.work)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            version = None
    result = ApplyResult(direction, tuple(runs), tuple(recovered), error, (), version)
    if error is not None and raise_on_failure:
        raise error
    return result


async def status(
    database_url: str, directory: Path | str, *, options: RunOptions | None = None
) -> list[MigrationStatus]:
    """Every version in the files or the history, with its state. Read-only."""
    runner = _Runner(database_url, Path(directory), options or RunOptions(), None)
    try:
        await runner.open(take_lock=False)
        _, _, statuses = await runner.load()
        return statuses
    finally:
        await runner.close()


@dataclass(frozen=True, slots=True)
class UnfinishedBackfill:
    """A backfill whose saved progress says it has not finished: the next run of its
    section (``up``, or ``down`` for a down section's) resumes it after ``last_key``.

    ``line`` and ``statement`` locate its UPDATE in the file (None when the file
    is gone or no longer has a backfill at that step).
    """

    label: str
    direction: Direction
    step: int
    line: int | None
    statement: str | None
    progress: Any  # a backfill.ProgressRecord

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        record = self.progress.to_dict()
        return {
            "migration": self.label,
            "direction": self.direction.value,
            "step": self.step,
            "line": self.line,
            "statement": self.statement,
            "table": record["table"],
            "mode": record["mode"],
            "key": record["key"],
            "last_key": record["last_key"],
            "rows_done": record["rows_done"],
            "batches": record["batches"],
            "started_at": record["started_at"],
            "updated_at": record["updated_at"],
        }


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What ``migrate status`` shows: every version, and the unfinished backfills."""

    migrations: tuple[MigrationStatus, ...]
    backfills: tuple[UnfinishedBackfill, ...] = ()


def _unfinished_backfill(
    record: Any, files: Sequence[MigrationFile], server_version_num: int
) -> UnfinishedBackfill:
    label, direction = split_backfill_key(record.migration)
    line = statement = None
    m = next((f for f in files if f.label == label), None)
    if m is not None and m.section(direction.value) is not None:
        try:
            steps = migration_steps(m, direction, server_version_num=server_version_num)
        except MigrationError:
            steps = ()  # verify reports the file; status still shows the saved position
        step = next((s for s in steps if s.number == record.statement_index), None)
        if step is not None and step.kind is StepKind.BACKFILL:
            line, statement = step.line, summarize_sql(step.statements[0].text)
    return UnfinishedBackfill(label, direction, record.statement_index, line, statement, record)


async def status_report(
    database_url: str, directory: Path | str, *, options: RunOptions | None = None
) -> StatusReport:
    """:func:`status` plus the backfills that saved progress but have not finished. Read-only."""
    from bluegreen.migrations.backfill import load_progress

    runner = _Runner(database_url, Path(directory), options or RunOptions(), None)
    try:
        await runner.open(take_lock=False)
        files, _, statuses = await runner.load()
        records = await load_progress(runner.w)
        backfills = tuple(
            _unfinished_backfill(r, files, runner.server_version_num) for r in records
        )
        return StatusReport(tuple(statuses), backfills)
    finally:
        await runner.close()


async def verify(
    database_url: str, directory: Path | str, *, options: RunOptions | None = None
) -> list[Problem]:
    """Checksums, missing files, out-of-order files, unfinished runs, unparsable SQL.

    Read-only.
    """
    runner = _Runner(database_url, Path(directory), options or RunOptions(), None)
    try:
        await runner.open(take_lock=False)
        files, _, statuses = await runner.load()
        found = problems(statuses)
        for m in files:
            for direction in (Direction.UP, Direction.DOWN):
                if m.section(direction.value) is None:
                    continue
                selected = Selected(m, direction)
                try:
                    runner.prepare([selected])
                except MigrationError as exc:
                    found.append(
                        Problem("invalid_sql", Severity.ERROR, m.version, m.label, str(exc))
                    )
        return found
    finally:
        await runner.close()


async def plan(
    database_url: str,
    directory: Path | str,
    *,
    direction: Direction = Direction.UP,
    phases: Collection[Phase | str] | None = None,
    to: int | None = None,
    allow_out_of_order: bool = False,
    options: RunOptions | None = None,
) -> Plan:
    """What ``apply`` (or ``rollback``) would run now: steps, locks, row estimates."""
    opts = options or RunOptions()
    wanted = None if phases is None else frozenset(Phase(p) for p in phases)
    runner = _Runner(database_url, Path(directory), opts, None)
    try:
        await runner.open(take_lock=False)
        files, _, statuses = await runner.load()
        if direction is Direction.UP:
            selected = select_up(
                statuses, to=to, phases=wanted, allow_out_of_order=allow_out_of_order
            )
        else:
            selected = select_down(statuses, to=to)
        prepared = runner.prepare(selected)
        locks = _plan_locks(files, prepared)
        cache: dict[str, TableEstimate] = {}
        estimates = {}
        for _sel, steps in prepared:
            for step in steps:
                for statement in step.statements:
                    for table in locks[id(statement)][1]:
                        if table not in cache:
                            cache[table] = await _estimate(runner.w, table)
                        estimates[table] = cache[table]
        migrations = [
            plan_migration(
                sel,
                steps,
                lock_of=lambda statement: locks[id(statement)],
                estimates=estimates.__getitem__,
                timeouts=opts,
            )
            for sel, steps in prepared
        ]
        return Plan(direction, tuple(migrations))
    finally:
        await runner.close()


def _plan_locks(
    files: Sequence[MigrationFile], prepared: Sequence[tuple[Selected, tuple[Step, ...]]]
) -> dict[int, tuple[LockSummary | None, tuple[str, ...]]]:
    """The lock of every statement to run, keyed by ``id(statement)``.

    The linter walks the files in version order (then the down sections, newest
    first) sharing what each statement established, so the lock of a statement
    knows what earlier files and statements said: the old type of a column, a
    validated CHECK, a function's volatility.
    """
    from bluegreen.migrations.lint.engine import section_locks

    known = section_locks(
        files,
        up=[sel.migration.version for sel, _ in prepared if sel.direction is Direction.UP],
        down=[sel.migration.version for sel, _ in prepared if sel.direction is Direction.DOWN],
    )
    locks: dict[int, tuple[LockSummary | None, tuple[str, ...]]] = {}
    for sel, steps in prepared:
        statements = [statement for step in steps for statement in step.statements]
        # both parsed the same section text: one lock per statement, in order
        infos = known[(sel.migration.version, sel.direction.value)]
        for statement, info in zip(statements, infos, strict=True):
            locks[id(statement)] = _lock_of(statement, info)
    return locks


def _lock_of(statement: Statement, info: Any = None) -> tuple[LockSummary | None, tuple[str, ...]]:
    """The linter's lock for ``statement`` (``info``: as the linter saw it in context;
    default: the statement alone), and the tables it locks."""
    if info is None:
        from bluegreen.migrations.lint.locks import lock_for

        info = lock_for(statement.node)
    tables = tuple(info.tables) or tables_of(statement)
    summary = LockSummary(
        mode=info.mode,
        blocks_reads=info.blocks_reads,
        blocks_writes=info.blocks_writes,
        rewrites=info.rewrites,
        scans=getattr(info, "scans", False),
        note=getattr(info, "note", ""),
    )
    return summary, tables


def _quote_name(name: str) -> str:
    if name.startswith('"'):
        return name
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


async def _estimate(conn: asyncpg.Connection, table: str) -> TableEstimate:
    """Rows from ``pg_class.reltuples`` (the planner's estimate) or, for a table never
    vacuumed or analyzed, from the statistics collector's live-row count."""
    record = await conn.fetchrow(
        "SELECT c.reltuples::float8 AS reltuples, s.n_live_tup, pg_relation_size(c.oid) AS size "
        "FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid "
        "WHERE c.oid = to_regclass($1)",
        _quote_name(table),
    )
    if record is None:
        return TableEstimate(table, False, None, None)
    if record["reltuples"] >= 0:
        return TableEstimate(table, True, round(record["reltuples"]), record["size"], "reltuples")
    if record["n_live_tup"] is not None:
        return TableEstimate(table, True, record["n_live_tup"], record["size"], "n_live_tup")
    return TableEstimate(table, True, None, record["size"])
