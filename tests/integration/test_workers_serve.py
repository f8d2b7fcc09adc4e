"""``bluegreen serve --workers 2``: a control process and two data-plane workers.

Every worker is a replica of the state store: a change counts as applied only
once each worker runs it, and traffic through each worker follows it. A
killed worker comes back with the current state; SIGTERM drains them all;
the admin API's numbers add every worker up.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.admin_fixtures import TOKEN
from tests.integration.rawhttp import RawClient, get
from tests.integration.replica_procs import ServeReplica
from tests.integration.upstreams import Upstream, start_upstream

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"BLUEGREEN_ADMIN_TOKEN": TOKEN}


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    blue, green = await start_upstream("blue"), await start_upstream("green")
    yield blue, green
    await blue.close()
    await green.close()


@pytest.fixture
async def serve(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> AsyncIterator[ServeReplica]:
    blue, green = upstreams
    state = f"file:{tmp_path / 'state.json'}"
    replica = await ServeReplica.start(
        state, blue.address, green.address, "--workers", "2", env=ENV
    )
    yield replica
    if replica.proc.returncode is None:
        try:
            await replica.stop(within=30)
        except TimeoutError:
            replica.proc.kill()
            await replica.proc.wait()


async def workers(session: aiohttp.ClientSession, serve: ServeReplica) -> list[dict[str, Any]]:
    """The live worker replicas, by slot."""
    async with session.get(f"{serve.admin_url}/api/v1/replicas") as response:
        body = await response.json()
    found = [r for r in body["replicas"] if r["alive"] and re.search(r":w\d+$", r["id"])]
    return sorted(found, key=lambda r: r["id"])


async def fresh_connection_colours(port: int, count: int) -> list[str]:
    """The colour answering each of ``count`` GETs, each on a new connection (new worker pick)."""
    colours = []
    for _ in range(count):
        client = await RawClient.connect("127.0.0.1", port)
        response = await client.request(get())
        assert response.status == 200, response.body
        colour = response.header("x-upstream-colour")
        assert colour is not None
        colours.append(colour.decode())
        await client.close()
    return colours


async def set_green(session: aiohttp.ClientSession, serve: ServeReplica, percent: int) -> int:
    """Set green's weight, waiting until every replica applied it; the new version."""
    async with session.put(
        f"{serve.admin_url}/api/v1/weights",
        json={"green": percent},
        params={"wait": "10s"},
        headers=AUTH,
    ) as response:
        body = await response.json()
        assert response.status == 200, body  # 202 when a replica had not applied it in time
    applied = body["applied"]
    assert applied["all_applied"] is True, body
    return int(applied["replicas"][0]["applied_version"])


async def poll(condition: Any, within: float = 15.0) -> Any:
    """Await ``condition()`` until it returns something truthy."""
    async with asyncio.timeout(within):
        while True:
            result = await condition()
            if result:
                return result
            await asyncio.sleep(0.1)


def green_requests(replica: dict[str, Any]) -> int:
    return int(replica["extra"]["traffic"]["green"]["requests"])


async def test_every_worker_is_a_replica_that_applies_each_change(serve: ServeReplica) -> None:
    async with aiohttp.ClientSession() as session:
        found = await workers(session, serve)
        assert [r["id"].rsplit(":", 1)[1] for r in found] == ["w1", "w2"]
        pids = {r["pid"] for r in found}
        assert len(pids) == 2
        assert serve.proc.pid not in pids  # each worker reports its own process

        version = await set_green(session, serve, 100)
        assert all(r["applied_version"] == version for r in await workers(session, serve))
        colours = await fresh_connection_colours(serve.port, 40)
        assert colours == ["green"] * 40

        # Both workers took part, each following the change (heartbeats carry their numbers).
        async def both_served() -> list[dict[str, Any]] | None:
            found = await workers(session, serve)
            total = sum(green_requests(r) for r in found)
            return found if total == 40 else None

        found = await poll(both_served)
        assert all(green_requests(r) > 0 for r in found), found


async def test_split_is_exact_per_worker(serve: ServeReplica) -> None:
    async with aiohttp.ClientSession() as session:
        await set_green(session, serve, 50)
    colours = await fresh_connection_colours(serve.port, 100)
    # Each worker alternates exactly; two workers together are off by at most one each.
    assert 48 <= colours.count("green") <= 52, colours.count("green")


async def test_a_killed_worker_comes_back_with_the_current_state(serve: ServeReplica) -> None:
    async with aiohttp.ClientSession() as session:
        first = (await workers(session, serve))[0]
        os.kill(first["pid"], signal.SIGKILL)

        async def restarted() -> bool:
            found = await workers(session, serve)
            return len(found) == 2 and found[0]["pid"] != first["pid"]

        await poll(restarted)
        (exited,) = serve.logged("worker_exited")
        assert exited["worker"] == 1
        assert exited["exit_code"] == -signal.SIGKILL
        version = await set_green(session, serve, 100)  # the new worker confirms it too
        assert all(r["applied_version"] == version for r in await workers(session, serve))
    assert await fresh_connection_colours(serve.port, 20) == ["green"] * 20


async def test_metrics_and_stats_add_up_every_worker(serve: ServeReplica) -> None:
    await fresh_connection_colours(serve.port, 30)
    async with aiohttp.ClientSession() as session:

        async def counted() -> str | None:
            async with session.get(f"{serve.admin_url}/metrics") as response:
                text = await response.text()
            line = 'bluegreen_requests_total{colour="blue",status_class="2xx"} 30.0'
            return text if line in text else None

        await poll(counted)
        async with session.get(f"{serve.admin_url}/api/v1/stats") as response:
            stats = await response.json()
        assert stats["colours"]["blue"]["requests_total"] == 30

        async def heartbeats_add_up() -> bool:  # each worker's share, as heartbeated
            found = await workers(session, serve)
            return sum(int(r["extra"]["traffic"]["blue"]["requests"]) for r in found) == 30

        await poll(heartbeats_add_up)


async def test_sigterm_drains_every_worker_then_exits_0(
    serve: ServeReplica, upstreams: tuple[Upstream, Upstream]
) -> None:
    blue, _ = upstreams
    blue.hold_next()
    held = []
    for _ in range(8):
        client = await RawClient.connect("127.0.0.1", serve.port)
        await client.send(get("/hold"))
        held.append(client)
    async with aiohttp.ClientSession() as session:

        async def both_busy() -> bool:
            found = await workers(session, serve)
            in_flight = [r["extra"]["traffic"]["blue"]["in_flight"] for r in found]
            return len(found) == 2 and sum(in_flight) == 8 and all(in_flight)

        await poll(both_busy)
    serve.proc.send_signal(signal.SIGTERM)

    async def refused() -> bool:
        try:
            probe = await RawClient.connect("127.0.0.1", serve.port)
        except ConnectionRefusedError:
            return True
        await probe.close()
        return False

    await poll(refused)
    blue.release.set()
    for client in held:
        response = await client.response()
        assert response.status == 200
        assert response.header("connection") == b"close"
        await client.close()
    assert await serve.stop(sig=0, within=30) == 0  # signal 0: just wait (a 2nd SIGTERM cuts)
    names = [e["event"] for e in serve.events]
    assert names.count("worker_draining") == 2
    assert [e["drained"] for e in serve.logged("worker_stopped")] == [True, True]
    assert names.index("drain_started") < names.index("proxy_stopped")


async def test_a_second_sigterm_during_the_drain_cuts_every_worker_and_exits_1(
    serve: ServeReplica, upstreams: tuple[Upstream, Upstream]
) -> None:
    blue, _ = upstreams
    blue.hold_next()
    busy = await RawClient.connect("127.0.0.1", serve.port)
    await busy.send(get("/hold"))
    await asyncio.wait_for(blue.held.wait(), 5)
    serve.proc.send_signal(signal.SIGTERM)

    async def draining() -> bool:
        return "worker_draining" in [e["event"] for e in serve.events]

    await poll(draining)
    serve.proc.send_signal(signal.SIGTERM)
    try:
        assert await serve.stop(sig=0, within=30) == 1
        assert await busy.closed()  # cut, without a response
    finally:
        blue.release.set()
        await busy.close()
    assert "drain_forced" in [e["event"] for e in serve.events]
