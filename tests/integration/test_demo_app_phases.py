"""The demo app's consistency rule on a real PostgreSQL, through every migration phase.

v1 must keep working after expand + migrate (blue's smoke tests rerun on the
new schema); v2 must work before and after contract. Both run against the
same database with concurrent writers while the migrations run, and every
row ends with status == status_code.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from bluegreen.demo import MIGRATIONS_DIR
from bluegreen.demo.app import STATUSES, VERSION_HEADER, create_app, seed_orders
from bluegreen.migrations import runner
from bluegreen.migrations.runner import RunOptions

pytestmark = pytest.mark.postgres

SEED = 20_000  # 20 backfill batches: v1 writes while they run
OPTIONS = RunOptions(lock_timeout=1.0, lock_retries=10, retry_base=0.05, retry_cap=0.2)


@asynccontextmanager
async def running_app(version: str, dsn: str) -> AsyncIterator[str]:
    """The app of ``version`` on 127.0.0.1 and a free port; yields its base URL."""
    app_runner = web.AppRunner(create_app(version, dsn, pool_size=5, controls=True))
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{app_runner.addresses[0][1]}"
    finally:
        await app_runner.cleanup()


@dataclass
class Writers:
    """Concurrent readers/writers against one app; every 5xx or lost request is an error."""

    base: str
    version: str
    known: list[int]
    workers: int = 3
    done: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, session: aiohttp.ClientSession) -> None:
        self._stop.clear()
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(session, random.Random(i))))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks.clear()

    async def _work(self, session: aiohttp.ClientSession, rng: random.Random) -> None:
        while not self._stop.is_set():
            draw = rng.random()
            order_id = rng.choice(self.known)
            body: dict[str, object] | None
            if draw < 0.4:
                method, path, body = "GET", f"/orders/{order_id}", None
            elif draw < 0.7:
                method, path = "PATCH", f"/orders/{order_id}"
                body = {"status": rng.choice(STATUSES)}
            else:
                method, path = "POST", "/orders"
                body = {"customer": f"w-{self.version}", "amount": 9.99, "status": "paid"}
            try:
                async with session.request(method, self.base + path, json=body) as response:
                    payload = await response.json()
                    if response.status >= 500 or response.headers[VERSION_HEADER] != self.version:
                        self.errors.append(f"{method} {path}: {response.status} {payload}")
                    elif method == "POST":
                        self.known.append(payload["id"])
                    elif method == "PATCH" and body and payload["status"] != body["status"]:
                        self.errors.append(f"PATCH {path} answered {payload}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(f"{method} {path}: {exc!r}")
            self.done += 1


async def until(condition: Callable[[], bool], within: float = 30.0) -> None:
    """Wait until ``condition()`` holds (polling), failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def more_requests(*writers: Writers, count: int = 60) -> None:
    """Let every writer finish ``count`` more requests."""
    targets = [(w, w.done + count) for w in writers]
    await until(lambda: all(w.done >= target for w, target in targets))


async def health(session: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, object]]:
    async with session.get(base + "/health") as response:
        return response.status, await response.json()


async def apply(dsn: str, *phases: str) -> list[str]:
    result = await runner.apply(dsn, MIGRATIONS_DIR, phases=phases, options=OPTIONS)
    return [run.label for run in result.runs]


async def columns(dsn: str) -> dict[str, bool]:
    """orders' columns and whether each is NOT NULL."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass "
            "AND attnum > 0 AND NOT attisdropped"
        )
    finally:
        await conn.close()
    return {r["attname"]: r["attnotnull"] for r in rows}


async def out_of_sync(dsn: str) -> int:
    """Rows where status and status_code differ (or status_code is missing)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM orders WHERE status_code IS DISTINCT FROM status"
            )
        )
    finally:
        await conn.close()


@pytest.fixture
async def seeded(pg_dsn: str) -> str:
    """A database at migration 0001 with SEED orders written the v1 way."""
    await runner.apply(pg_dsn, MIGRATIONS_DIR, to=1, options=OPTIONS)
    assert await seed_orders(pg_dsn, SEED) == SEED
    return pg_dsn


async def test_v1_and_v2_share_the_database_through_every_phase(seeded: str) -> None:
    known = list(range(1, SEED + 1))
    async with aiohttp.ClientSession() as session, running_app("v1", seeded) as v1_url:
        v1 = Writers(v1_url, "v1", known)
        v1.start(session)
        await more_requests(v1)

        # expand while v1 writes
        assert await apply(seeded, "expand") == [
            "0002_rename_orders_status_to_status_code_expand",
            "0003_index_orders_status_code_idx",
        ]
        await more_requests(v1)
        async with running_app("v2", seeded) as v2_url:
            status, body = await health(session, v2_url)
            assert status == 503, "v2 must not be healthy before the backfill ran"
            assert "version>=5" in body["missing"]  # type: ignore[operator]

            # migrate while v1 writes
            assert await apply(seeded, "migrate") == [
                "0004_rename_orders_status_to_status_code_backfill",
                "0005_rename_orders_status_to_status_code_validate",
            ]
            assert (await health(session, v1_url))[0] == 200, "v1 must work on the new schema"
            assert (await health(session, v2_url))[0] == 200

            # both versions write the same rows concurrently
            v2 = Writers(v2_url, "v2", known)
            v2.start(session)
            await more_requests(v1, v2, count=150)
            await v1.stop()
            assert v1.errors == []
            assert await out_of_sync(seeded) == 0

            # contract while v2 writes; v1 has drained
            assert await apply(seeded, "contract") == [
                "0006_rename_orders_status_to_status_code_contract"
            ]
            await more_requests(v2, count=150)
            await v2.stop()
            assert v2.errors == []
            assert (await health(session, v2_url))[0] == 200
            status, body = await health(session, v1_url)
            assert status == 503
            assert body["missing"] == ["orders.status"]
    cols = await columns(seeded)
    assert "status" not in cols
    assert cols["status_code"] is True  # NOT NULL after contract
    assert v1.done > 0
    assert v2.done > 0


async def test_each_version_reads_what_the_other_wrote(seeded: str) -> None:
    await apply(seeded, "expand")
    await apply(seeded, "migrate")
    async with (
        aiohttp.ClientSession() as session,
        running_app("v1", seeded) as v1_url,
        running_app("v2", seeded) as v2_url,
    ):
        for writer, reader, status in ((v1_url, v2_url, "shipped"), (v2_url, v1_url, "delivered")):
            async with session.patch(f"{writer}/orders/7", json={"status": status}) as response:
                assert response.status == 200
            async with session.get(f"{reader}/orders/7") as response:
                assert (await response.json())["status"] == status
            async with session.post(
                f"{writer}/orders", json={"customer": "c", "amount": 1, "status": status}
            ) as response:
                created = await response.json()
            async with session.get(f"{reader}/orders/{created['id']}") as response:
                assert (await response.json())["status"] == status
        async with session.get(f"{v2_url}/orders?status=delivered&limit=5") as response:
            listed = (await response.json())["orders"]
        assert listed
        assert all(o["status"] == "delivered" for o in listed)
    assert await out_of_sync(seeded) == 0


async def test_v2_survives_contract_and_its_rollback(seeded: str) -> None:
    await apply(seeded, "expand")
    await apply(seeded, "migrate")
    known = list(range(1, SEED + 1))
    async with aiohttp.ClientSession() as session, running_app("v2", seeded) as v2_url:
        v2 = Writers(v2_url, "v2", known)
        v2.start(session)
        await more_requests(v2)
        await apply(seeded, "contract")
        await more_requests(v2)
        async with session.get(f"{v2_url}/version") as response:
            assert (await response.json())["writes"] == ["status_code"]

        # undo the contract while v2 writes: status comes back, v2 writes it again
        result = await runner.rollback(seeded, MIGRATIONS_DIR, to=5, options=OPTIONS)
        assert [r.label for r in result.runs] == [
            "0006_rename_orders_status_to_status_code_contract"
        ]
        assert (await health(session, v2_url))[0] == 200  # re-checks the columns
        async with session.get(f"{v2_url}/version") as response:
            assert (await response.json())["writes"] == ["status", "status_code"]
        await more_requests(v2)
        await v2.stop()
        assert v2.errors == []
        async with running_app("v1", seeded) as v1_url:
            assert (await health(session, v1_url))[0] == 200
            async with session.get(f"{v1_url}/orders/{known[-1]}") as response:
                assert response.status == 200
    assert await out_of_sync(seeded) == 0
