"""The history table ``bluegreen_migrations``: one row per attempt to run a migration.

A row is inserted as ``running`` and committed *before* the migration's first
statement, then updated: after every committed step (inside that step's
transaction when it has one, so the count is never ahead of the database),
and at the end to ``applied`` / ``rolled_back`` / ``failed``. A runner that is
killed leaves ``running``; the next runner (which got the advisory lock, so
the previous holder is gone) marks it ``interrupted``. Readers never need the
table to exist: an absent table is an empty history.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from bluegreen import __version__
from bluegreen.migrations.files import MigrationFile
from bluegreen.migrations.plan import Direction, HistoryRow, Outcome

TABLE: Final = "bluegreen_migrations"

_CREATE: Final = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id               bigserial PRIMARY KEY,
    version          bigint NOT NULL,
    name             text NOT NULL,
    file             text NOT NULL,
    phase            text NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('up', 'down')),
    checksum         text NOT NULL,
    outcome          text NOT NULL
                     CHECK (outcome IN ('running', 'applied', 'rolled_back', 'failed',
                                        'interrupted')),
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    duration_seconds double precision,
    steps_total      integer NOT NULL,
    steps_done       integer NOT NULL DEFAULT 0,
    current_step     integer,
    run_by           text NOT NULL,
    runner_pid       integer,
    backend_pid      integer,
    tool_version     text NOT NULL,
    error            text
);
CREATE INDEX IF NOT EXISTS {TABLE}_version_idx ON {TABLE} (version, id);
COMMENT ON TABLE {TABLE} IS
    'bluegreen migration history: one row per attempt; the latest row of a version is its state';
"""

_COLUMNS: Final = (
    "id, version, name, file, phase, direction, checksum, outcome, started_at, finished_at, "
    "duration_seconds, steps_total, steps_done, current_step, run_by, runner_pid, "
    "backend_pid, tool_version, error"
)

_FINISH: Final = (
    "outcome = $2, finished_at = clock_timestamp(), "
    "duration_seconds = extract(epoch FROM clock_timestamp() - started_at)"
)


@dataclass(frozen=True, slots=True)
class RunnerIdentity:
    """Who runs the migrations: ``user@host``, the OS pid and the bluegreen version."""

    run_by: str
    pid: int
    tool_version: str

    @classmethod
    def current(cls) -> RunnerIdentity:
        """This process."""
        try:
            user = getpass.getuser()
        except (OSError, KeyError):
            user = f"uid{os.getuid()}"
        return cls(f"{user}@{socket.gethostname()}", os.getpid(), __version__)


async def table_exists(conn: asyncpg.Connection) -> bool:
    """Whether the history table exists (on the search path)."""
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE))


async def ensure_table(conn: asyncpg.Connection) -> None:
    """Create the history table if it is missing (call with the runner lock held)."""
    if not await table_exists(conn):
        await conn.execute(_CREATE)


def _row(record: Any) -> HistoryRow:
    return HistoryRow(
        id=record["id"],
        version=record["version"],
        name=record["name"],
        file=record["file"],
        phase=record["phase"],
        direction=Direction(record["direction"]),
        checksum=record["checksum"],
        outcome=Outcome(record["outcome"]),
        started_at=record["started_at"],
        finished_at=record["finished_at"],
        duration_seconds=record["duration_seconds"],
        steps_total=record["steps_total"],
        steps_done=record["steps_done"],
        current_step=record["current_step"],
        run_by=record["run_by"],
        runner_pid=record["runner_pid"],
        backend_pid=record["backend_pid"],
        tool_version=record["tool_version"],
        error=record["error"],
    )


async def read_rows(conn: asyncpg.Connection) -> list[HistoryRow]:
    """Every attempt, oldest first; empty when the table does not exist."""
    if not await table_exists(conn):
        return []
    records = await conn.fetch(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY id")  # noqa: S608 - constants
    return [_row(r) for r in records]


async def live_backends(conn: asyncpg.Connection, rows: list[HistoryRow]) -> frozenset[int]:
    """Backend pids of ``running`` rows that are still connected.

    A pid counts only if its backend started before the row did: pids are
    reused, and a newer backend with the same pid is someone else.
    """
    started: dict[int, datetime] = {
        r.backend_pid: r.started_at
        for r in rows
        if r.outcome is Outcome.RUNNING and r.backend_pid is not None
    }
    if not started:
        return frozenset()
    records = await conn.fetch(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = ANY($1::int[])",
        list(started),
    )
    return frozenset(r["pid"] for r in records if r["backend_start"] <= started[r["pid"]])


async def start(
    conn: asyncpg.Connection,
    migration: MigrationFile,
    direction: Direction,
    *,
    steps_total: int,
    steps_done: int,
    identity: RunnerIdentity,
    backend_pid: int,
) -> int:
    """Insert (and commit) a ``running`` row; returns its id."""
    row_id: int = await conn.fetchval(
        f"INSERT INTO {TABLE} (version, name, file, phase, direction, checksum, outcome, "  # noqa: S608
        "steps_total, steps_done, run_by, runner_pid, backend_pid, tool_version) "
        "VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $9, $10, $11, $12) RETURNING id",
        migration.version,
        migration.name,
        migration.path.name,
        migration.phase.value,
        direction.value,
        migration.checksum,
        steps_total,
        steps_done,
        identity.run_by,
        identity.pid,
        backend_pid,
        identity.tool_version,
    )
    return row_id


async def set_current_step(conn: asyncpg.Connection, row_id: int, step: int) -> None:
    """Record the step about to run (committed before it starts)."""
    await conn.execute(f"UPDATE {TABLE} SET current_step = $2 WHERE id = $1", row_id, step)  # noqa: S608


async def step_done(
    conn: asyncpg.Connection, row_id: int, step: int, final: Outcome | None = None
) -> None:
    """Record that ``step`` committed; with ``final``, also finish the row.

    Called inside a step's transaction, this commits or rolls back with it.
    """
    if final is None:
        await conn.execute(f"UPDATE {TABLE} SET steps_done = $2 WHERE id = $1", row_id, step)  # noqa: S608
    else:
        await conn.execute(
            f"UPDATE {TABLE} SET steps_done = $3, {_FINISH} WHERE id = $1",  # noqa: S608
            row_id,
            final.value,
            step,
        )


async def finish(
    conn: asyncpg.Connection, row_id: int, outcome: Outcome, error: str | None = None
) -> None:
    """Close a row as ``applied``/``rolled_back``/``failed``/``interrupted``."""
    await conn.execute(
        f"UPDATE {TABLE} SET {_FINISH}, error = $3 WHERE id = $1",  # noqa: S608
        row_id,
        outcome.value,
        error,
    )


async def mark_interrupted(conn: asyncpg.Connection, row_id: int, reason: str) -> None:
    """Close a ``running`` row left by a runner that is gone.

    ``duration_seconds`` stays empty: nobody knows when that runner stopped.
    """
    await conn.execute(
        f"UPDATE {TABLE} SET outcome = 'interrupted', finished_at = clock_timestamp(), "  # noqa: S608
        "error = $2 WHERE id = $1 AND outcome = 'running'",
        row_id,
        reason,
    )


async def current_version(conn: asyncpg.Connection) -> int | None:
    """The highest version whose latest attempt left it applied, or None."""
    if not await table_exists(conn):
        return None
    value: int | None = await conn.fetchval(
        f"SELECT max(version) FROM (SELECT DISTINCT ON (version) version, direction, outcome "  # noqa: S608
        f"FROM {TABLE} ORDER BY version, id DESC) latest "
        "WHERE (direction = 'up' AND outcome = 'applied') "
        "OR (direction = 'down' AND outcome IN ('failed', 'interrupted', 'running'))"
    )
    return value
