"""Three ``bluegreen serve`` processes sharing one PostgreSQL state database.

Every check is made with real traffic through each proxy, not only by
reading the state: with whole-percent weights and batches of 100 unkeyed
requests, the deterministic split puts exactly ``weight`` requests of each
batch on green, so a replica that had not applied a change would show it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from tests.integration.admin_fixtures import TOKEN
from tests.integration.replica_procs import ServeReplica, colours_of, stop_all
from tests.integration.upstreams import Upstream, start_upstream

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.postgres]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Cluster:
    dsn: str
    admin_dsn: str
    database: str
    replicas: list[ServeReplica]
    session: aiohttp.ClientSession
    blue: Upstream
    green: Upstream

    async def put_weights(self, on: int, green: float, **params: str) -> aiohttp.ClientResponse:
        return await self.session.put(
            f"{self.replicas[on].admin_url}/api/v1/weights",
            json={"green": green},
            params=params,
            headers=AUTH,
        )

    async def greens(self) -> list[int]:
        """Green answers out of 100 unkeyed requests through each proxy."""
        counts = []
        for replica in self.replicas:
            colours = await colours_of(self.session, replica.proxy_url)
            counts.append(colours.count("green"))
        return counts


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(pg_admin_dsn: str) -> AsyncIterator[Cluster]:
    name = f"bg_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(pg_admin_dsn, name)
    blue, green = await start_upstream("blue"), await start_upstream("green")
    replicas: list[ServeReplica] = []
    session = aiohttp.ClientSession()
    try:
        env = {"BLUEGREEN_ADMIN_TOKEN": TOKEN}
        for _ in range(3):
            replicas.append(await ServeReplica.start(dsn, blue.address, green.address, env=env))
        yield Cluster(dsn, pg_admin_dsn, name, replicas, session, blue, green)
    finally:
        await session.close()
        await stop_all(replicas)
        await blue.close()
        await green.close()
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_all_replicas_start_with_the_stored_weights(cluster: Cluster) -> None:
    assert await cluster.greens() == [0, 0, 0]
    body = await (
        await cluster.session.get(f"{cluster.replicas[2].admin_url}/api/v1/replicas")
    ).json()
    assert body["live"] == 3
    assert body["all_applied"] is True


async def test_a_weight_put_on_one_replica_is_applied_by_all_three(cluster: Cluster) -> None:
    response = await cluster.put_weights(0, 10, wait="10s")
    body = await response.json()
    assert response.status == 200, body
    applied = body["applied"]
    assert applied["all_applied"] is True
    assert len(applied["replicas"]) == 3
    assert {r["applied_version"] for r in applied["replicas"]} == {body["weights"]["version"]}
    assert await cluster.greens() == [10, 10, 10]
    # Asked on another replica, the summary names all three.
    replicas = await (
        await cluster.session.get(f"{cluster.replicas[1].admin_url}/api/v1/replicas")
    ).json()
    assert replicas["summary"] == f"all 3 live replicas run version {body['weights']['version']}"


async def test_if_match_conflicts_across_replicas(cluster: Cluster) -> None:
    state = await (
        await cluster.session.get(f"{cluster.replicas[0].admin_url}/api/v1/state")
    ).json()
    version = state["version"]
    first = await cluster.put_weights(1, 20, wait="10s")
    assert first.status == 200
    stale = await cluster.session.put(
        f"{cluster.replicas[2].admin_url}/api/v1/weights",
        json={"green": 30},
        headers={**AUTH, "If-Match": str(version)},
    )
    body = await stale.json()
    assert stale.status == 409
    assert body["current_version"] == version + 1
    assert await cluster.greens() == [20, 20, 20]


async def test_flags_reach_the_upstream_through_every_replica(cluster: Cluster) -> None:
    assert (await cluster.put_weights(0, 20, wait="10s")).status == 200
    put = await cluster.session.put(
        f"{cluster.replicas[0].admin_url}/api/v1/flags/new_checkout",
        json={"percent": 100},
        params={"wait": "10s"},
        headers=AUTH,
    )
    assert put.status == 201, await put.text()
    for replica in cluster.replicas:
        marks = len(cluster.blue.seen), len(cluster.green.seen)
        colours = await colours_of(cluster.session, replica.proxy_url, 100)
        assert colours.count("green") == 20
        seen = cluster.blue.seen[marks[0] :] + cluster.green.seen[marks[1] :]
        proxied = [s for s in seen if s.target == "/"]  # not the health probes
        assert len(proxied) == 100
        assert all(s.all("X-Bluegreen-Flags") == ["new_checkout"] for s in proxied)
    delete = await cluster.session.delete(
        f"{cluster.replicas[2].admin_url}/api/v1/flags/new_checkout",
        params={"wait": "10s"},
        headers=AUTH,
    )
    assert delete.status == 200


async def test_replicas_keep_serving_while_the_database_is_away_and_converge_after(
    cluster: Cluster,
) -> None:
    async with cluster.session.get(f"{cluster.replicas[0].admin_url}/api/v1/weights") as r:
        assert (await r.json())["green"] == 20
    admin = await asyncpg.connect(cluster.admin_dsn)
    try:
        # Take the database away: no new sessions, and every bluegreen session killed.
        await admin.execute(f'ALTER DATABASE "{cluster.database}" ALLOW_CONNECTIONS false')
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            cluster.database,
        )
        assert killed >= 3  # at least each replica's listener
        # Traffic goes on with the last known weights.
        assert await cluster.greens() == [20, 20, 20]
        # Writes cannot happen now: the admin API says so instead of pretending.
        refused = await cluster.put_weights(0, 40)
        assert refused.status == 503
        assert "state store unavailable" in (await refused.json())["error"]
        assert await cluster.greens() == [20, 20, 20]
    finally:
        await admin.execute(f'ALTER DATABASE "{cluster.database}" ALLOW_CONNECTIONS true')
        await admin.close()
    # Back: a later change reaches all three (they reconnect, or poll meanwhile).
    async with asyncio.timeout(60):
        while True:
            response = await cluster.put_weights(1, 40, wait="20s")
            if response.status != 503:  # replica 1's pool may need one more reconnect
                break
            await asyncio.sleep(0.2)
    body = await response.json()
    assert response.status == 200, body
    assert body["applied"]["all_applied"] is True
    assert len(body["applied"]["replicas"]) == 3
    assert await cluster.greens() == [40, 40, 40]
    assert all(r.proc.returncode is None for r in cluster.replicas)
