"""Helpers for the migration runner tests: files, polling, history reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg


def migration_text(
    phase: str = "expand",
    up: str = "SELECT 1;",
    down: str | None = None,
    *,
    header: str = "",
    irreversible: str | None = None,
) -> str:
    """The text of a migration file."""
    lines = [f"-- bluegreen:phase {phase}"]
    if irreversible:
        lines.append(f"-- bluegreen:irreversible {irreversible}")
    if header:
        lines.append(header.rstrip("\n"))
    lines += ["-- bluegreen:up", up.rstrip("\n")]
    if down is not None:
        lines += ["-- bluegreen:down", down.rstrip("\n")]
    return "\n".join(lines) + "\n"


def write_migration(directory: Path, name: str, *args: Any, **kwargs: Any) -> Path:
    """Write ``directory/name`` (``0001_x.sql``) from :func:`migration_text` arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(migration_text(*args, **kwargs), encoding="utf-8")
    return path


async def eventually(
    check: Callable[[], Awaitable[Any]], *, within: float = 15.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


async def history(dsn: str) -> list[dict[str, Any]]:
    """Every row of bluegreen_migrations, oldest first."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM bluegreen_migrations ORDER BY id")
        return [dict(r) for r in rows]
    finally:
        await conn.close()


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    """One value from a fresh connection."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def waiting_on_lock(conn: asyncpg.Connection, application_name: str) -> int | None:
    """The pid of a backend with this application_name waiting on a lock, if any."""
    pid: int | None = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
        "AND wait_event_type = 'Lock' AND datname = current_database()",
        application_name,
    )
    return pid
