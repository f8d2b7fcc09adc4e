"""A second proxy replica joining in the middle of a rollout serves the current split at once.

Two ``bluegreen serve`` processes share their state in PostgreSQL. The first
runs the rollout of v2 (its controller leads) under a paced load; while green
bakes at 50 %, the second starts. Its very first requests are split 50/50
(without a sticky key the split is exact), it reports the current state
version, and it takes part in the rest of the rollout: a promotion sent to
*its* admin API is carried out by the leader on the first replica, and is
confirmed only once the second one also sends 100 % to green.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bluegreen.demo import MIGRATIONS_DIR
from bluegreen.demo.app import VERSION_HEADER, RunningApp, seed_orders, start_app
from bluegreen.demo.config import DemoServeSettings
from bluegreen.demo.load import LoadConfig, LoadGenerator
from bluegreen.demo.processes import Supervisor
from bluegreen.demo.run import RunningProxy, start_proxy
from bluegreen.migrations import runner

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOKEN = "replica-test-token-0123456789"  # noqa: S105 - a test token
ROWS = 1000


@dataclass
class Cluster:
    supervisor: Supervisor
    blue: RunningApp
    green: RunningApp
    first: RunningProxy
    settings: Callable[[int], DemoServeSettings]
    env: dict[str, str]
    session: aiohttp.ClientSession

    async def admin(self, proxy: RunningProxy, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(
            method,
            f"{proxy.admin_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response:
            answer = await response.json()
            assert response.status < 300, answer
            return answer


@pytest.fixture
async def cluster(tmp_path: Path, pg_dsn: str) -> AsyncIterator[Cluster]:
    # Expand and migrate are done: this rollout is about traffic, not schema.
    await runner.apply(pg_dsn, MIGRATIONS_DIR, to=1)
    await seed_orders(pg_dsn, ROWS)
    await runner.apply(pg_dsn, MIGRATIONS_DIR, phases=("expand", "migrate"))
    async with Supervisor(tmp_path) as supervisor:
        blue, green = await asyncio.gather(
            start_app(supervisor, "blue", "v1", pg_dsn),
            start_app(supervisor, "green", "v2", pg_dsn),
        )

        def settings(port: int) -> DemoServeSettings:
            return DemoServeSettings(
                proxy_port=port,
                blue=blue.url.removeprefix("http://"),
                green=green.url.removeprefix("http://"),
                state_url=pg_dsn,  # shared by every replica
                contract_grace=3600.0,  # the contract is not this test's business
            )

        env = {"BLUEGREEN_ADMIN_TOKEN": TOKEN, "DATABASE_URL": pg_dsn}
        first = await start_proxy(supervisor, tmp_path, settings, env, name="proxy-1")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            yield Cluster(supervisor, blue, green, first, settings, env, session)


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {within:g}s waiting for {what}"
        await asyncio.sleep(0.05)


async def versions_through(
    session: aiohttp.ClientSession, proxy: RunningProxy, n: int
) -> Counter[str]:
    """Which app version answered each of ``n`` consecutive requests through ``proxy``."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        async with session.get(f"{proxy.url}/version") as response:
            assert response.status == 200, await response.text()
            seen[response.headers[VERSION_HEADER]] += 1
            await response.read()
    return seen


async def test_a_replica_joining_mid_rollout_serves_the_current_weights(cluster: Cluster) -> None:
    c = cluster
    load = LoadGenerator(LoadConfig(base_url=c.first.url, rate=60, known_ids=ROWS))
    load_task = asyncio.create_task(load.run(duration=90))
    view: dict[str, Any] = {}

    async def rollout_is(*phases: str, step: int | None = None) -> bool:
        view.update(await c.admin(c.first, "GET", "/api/v1/rollout"))
        assert view["phase"] not in ("rolled_back", "aborted"), view["summary"]
        return view["phase"] in phases and (step is None or view["step"] == step)

    try:
        await c.admin(
            c.first,
            "POST",
            "/api/v1/rollout",
            {
                "version": "v2",
                "steps": [{"weight": 10, "bake": "500ms"}, {"weight": 50, "bake": "120s"}],
            },
        )
        await until(lambda: rollout_is("bake", step=2), 60, "green baking at 50 %")
        state_version = view["state_version"]

        second = await start_proxy(
            c.supervisor, c.supervisor.log_dir, c.settings, c.env, name="proxy-2"
        )
        # Its first requests already follow the stored split: exactly half to each.
        split = await versions_through(c.session, second, 100)
        assert split == Counter({"v1": 50, "v2": 50})

        replicas = await c.admin(second, "GET", "/api/v1/replicas")
        live = [r for r in replicas["replicas"] if r["alive"]]
        # Two proxies; each is one replica, or one per worker (ids ending :w1, :w2...).
        assert len({re.sub(r":w\d+$", "", r["id"]) for r in live}) == 2, replicas
        assert all(r["applied_version"] >= state_version for r in live), replicas

        # Any replica takes commands; the leader (on the first) carries them out, and the
        # promotion counts only once the newcomer applied 100 % too.
        await c.admin(second, "POST", "/api/v1/rollout/promote")
        await until(lambda: rollout_is("promoted"), 30, "the promotion")
        promoted = view["state_version"]
        assert await versions_through(c.session, second, 50) == Counter({"v2": 50})
        replicas = await c.admin(c.first, "GET", "/api/v1/replicas")
        assert all(r["applied_version"] >= promoted for r in replicas["replicas"] if r["alive"]), (
            replicas
        )
    finally:
        load.stop()
        accounting = await asyncio.wait_for(load_task, 20)
    assert accounting.failed_requests == 0, accounting.total
    assert accounting.colours["green"].requests > 0
