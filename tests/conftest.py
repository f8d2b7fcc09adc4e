"""Shared fixtures: a real PostgreSQL, one fresh database per test.

The server comes from ``BLUEGREEN_TEST_DSN`` (a libpq URL) or, if unset,
``postgresql://postgres@127.0.0.1:5432/postgres``. Without a reachable server
the PostgreSQL tests skip with a message naming the variable — unless
``BLUEGREEN_REQUIRE_PG=1`` (CI sets it), in which case they fail.

``BLUEGREEN_EXPECT_COMPILED=1`` (CI's run against a ``BLUEGREEN_COMPILE=1``
install) stops the session before any test unless the data plane imported
is the mypyc-compiled one, so that run can never test the sources instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _expect_compiled() -> bool:
    return os.environ.get("BLUEGREEN_EXPECT_COMPILED") == "1"


@pytest.fixture
def expected_data_plane() -> str:
    """The build this test run must import: ``compiled`` under BLUEGREEN_EXPECT_COMPILED=1."""
    return "compiled" if _expect_compiled() else "interpreted"


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _expect_compiled():
        return
    from bluegreen import proxy
    from bluegreen.runtime import data_plane_build

    if data_plane_build() != "compiled":
        pytest.exit(
            f"BLUEGREEN_EXPECT_COMPILED=1 but the data plane is interpreted ({proxy.__file__}): "
            "install with BLUEGREEN_COMPILE=1 and run pytest with --import-mode=append "
            "from that environment's bin/pytest, so the sources do not shadow it",
            returncode=3,
        )


def _admin_dsn() -> str:
    return os.environ.get("BLUEGREEN_TEST_DSN", DEFAULT_DSN)


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """DSN of a database on the test server from which others are created."""
    dsn = _admin_dsn()
    try:
        asyncio.run(_execute(dsn, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = (
            f"PostgreSQL unreachable at {dsn} ({exc}); set BLUEGREEN_TEST_DSN "
            "to a server where databases can be created"
        )
        if os.environ.get("BLUEGREEN_REQUIRE_PG") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return dsn


@pytest.fixture
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"bg_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute(pg_admin_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(pg_admin_dsn, name)
    finally:
        asyncio.run(_execute(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
