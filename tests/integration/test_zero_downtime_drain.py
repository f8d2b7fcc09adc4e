"""SIGTERM to the proxy under load: every request in flight completes; nothing is dropped.

Real processes: the demo app (v1) as blue and green, each answering after a
1 s delay so that dozens of requests are in flight at any moment, one
``bluegreen serve`` in front of them at 50 %, and a paced load through it.
The proxy gets SIGTERM in the middle of the load. What the client sees is
counted honestly:

* every request sent well before the signal (``ON_THE_WIRE`` earlier, so its
  bytes had certainly reached the proxy) completes with the app's answer,
  including the many still in flight at the signal: they finish during the
  drain, with ``Connection: close``;
* requests sent after the signal find the listener closed (connection
  refused) or their idle keep-alive connection closed by the drain; a load
  balancer in front retries those on another replica, and they never reached
  an app;
* the proxy exits 0 (drained within ``timeouts.drain``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bluegreen.demo import MIGRATIONS_DIR
from bluegreen.demo.app import RunningApp, seed_orders, start_app
from bluegreen.demo.config import DemoServeSettings
from bluegreen.demo.load import LoadConfig, LoadGenerator, Mix
from bluegreen.demo.processes import Supervisor
from bluegreen.demo.run import RunningProxy, start_proxy
from bluegreen.migrations import runner

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

APP_DELAY = 1.0  # seconds every app request takes
RATE = 60.0  # requests/s: ~60 in flight at any moment
ON_THE_WIRE = 0.25  # seconds: a request started this long before the signal was sent
ROWS = 500


@dataclass
class Stack:
    blue: RunningApp
    green: RunningApp
    proxy: RunningProxy


@pytest.fixture
async def stack(tmp_path: Path, pg_dsn: str) -> AsyncIterator[Stack]:
    await runner.apply(pg_dsn, MIGRATIONS_DIR, to=1)
    await seed_orders(pg_dsn, ROWS)
    async with Supervisor(tmp_path) as supervisor:
        blue, green = await asyncio.gather(
            start_app(supervisor, "blue", "v1", pg_dsn, pool_size=20),
            start_app(supervisor, "green", "v1", pg_dsn, pool_size=20),
        )

        def settings(port: int) -> DemoServeSettings:
            return DemoServeSettings(
                proxy_port=port,
                blue=blue.url.removeprefix("http://"),
                green=green.url.removeprefix("http://"),
                state_url=f"file:{tmp_path / 'state.json'}",
                drain=10.0,
                extra={"routing": {"green_weight": 50}},
            )

        env = {"BLUEGREEN_ADMIN_TOKEN": "drain-test-token-0123456789", "DATABASE_URL": pg_dsn}
        proxy = await start_proxy(supervisor, tmp_path, settings, env)
        async with aiohttp.ClientSession() as session:
            for app in (blue, green):
                async with session.post(
                    f"{app.url}/_demo/break", json={"ratio": 0, "delay": APP_DELAY}
                ) as response:
                    assert response.status == 200
        yield Stack(blue, green, proxy)


async def in_flight(session: aiohttp.ClientSession, app: RunningApp) -> int:
    async with session.get(f"{app.url}/_demo/break") as response:
        return int((await response.json())["in_flight"])


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {within:g}s waiting for {what}"
        await asyncio.sleep(0.05)


async def test_sigterm_under_load_completes_every_request_in_flight(stack: Stack) -> None:
    load = LoadGenerator(
        LoadConfig(
            base_url=stack.proxy.url,
            rate=RATE,
            mix=Mix(get=1.0, create=0.0, update=0.0),
            known_ids=ROWS,
            connections=256,  # never queue in the client: a started request is a sent one
            max_in_flight=256,
            request_timeout=10.0,
            colours={"v1": "app"},
        ),
        phase="serving",
    )
    runner_task = asyncio.create_task(load.run(duration=60))
    async with aiohttp.ClientSession() as session:

        async def busy() -> bool:
            counts = [await in_flight(session, a) for a in (stack.blue, stack.green)]
            return load.progress().answered >= 30 and min(counts) >= 5

        await until(busy, 30, "requests in flight on both apps")
    signalled = load.now()
    load.set_phase("draining")
    stack.proxy.process.send_signal(signal.SIGTERM)
    code = await stack.proxy.process.wait(within=20)
    exited = load.now()

    async def refused_after_exit() -> bool:
        return sum(1 for r in load.records if r.start > exited) >= 10

    await until(refused_after_exit, 10, "requests after the proxy exited")
    load.stop()
    await asyncio.wait_for(runner_task, 20)

    assert code == 0, stack.proxy.process.tail()
    assert '"drained": true' in stack.proxy.process.tail(40)
    records = load.records
    sent_before = [r for r in records if r.start <= signalled - ON_THE_WIRE]
    in_flight_at_signal = [r for r in sent_before if r.start + r.latency > signalled]
    band = [r for r in records if signalled - ON_THE_WIRE < r.start <= signalled]
    after = [r for r in records if r.start > signalled]
    dropped = [r for r in sent_before if r.failed]
    print(
        f"\nSIGTERM with {len(in_flight_at_signal)} requests in flight (sent >= "
        f"{ON_THE_WIRE * 1000:.0f} ms before): all completed; drain took "
        f"{exited - signalled:.2f}s. Sent in the last {ON_THE_WIRE * 1000:.0f} ms before the "
        f"signal: {len(band)} ({sum(r.failed for r in band)} failed). After it: {len(after)}, "
        f"outcomes {sorted({r.outcome for r in after})}"
    )
    assert dropped == []
    assert len(in_flight_at_signal) >= 10
    assert all(r.status == 200 and r.colour == "app" for r in in_flight_at_signal)
    # The proxy exited only after the last of them was answered (the exit is seen up to one
    # poll, 50 ms, late; the client reads the answer before the proxy closes).
    assert max(r.start + r.latency for r in in_flight_at_signal) <= exited + 0.05
    # New connections after the listener closed are refused; nothing after it got an answer
    # that was not an app's.
    assert any(r.error == "connect" for r in after)
    assert all(r.status == 200 or r.error in ("connect", "disconnected") for r in after)
