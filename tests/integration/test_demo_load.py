"""The load generator against a real aiohttp server on 127.0.0.1, at a low rate."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from bluegreen.demo.app import VERSION_HEADER
from bluegreen.demo.load import LoadConfig, LoadGenerator, Mix
from bluegreen.demo.processes import free_port
from bluegreen.demo.report import UNKNOWN_COLOUR


class FakeOrders:
    """An orders API double that answers like the demo app; v2 fails every ``fail_every``-th."""

    def __init__(self, fail_every: int = 0) -> None:
        self.fail_every = fail_every
        self.ids = itertools.count(1001)
        self.seen: list[tuple[str, str]] = []
        self.v2_calls = 0

    def version_for(self, request: web.Request) -> str:
        return "v2" if len(self.seen) % 2 else "v1"

    async def handle(self, request: web.Request) -> web.Response:
        version = self.version_for(request)
        self.seen.append((request.method, request.path))
        headers = {VERSION_HEADER: version}
        if version == "v2":
            self.v2_calls += 1
            if self.fail_every and self.v2_calls % self.fail_every == 0:
                return web.json_response({"error": "boom"}, status=500, headers=headers)
        if request.method == "POST":
            body = await request.json()
            return web.json_response({"id": next(self.ids), **body}, status=201, headers=headers)
        if request.method == "PATCH":
            body = await request.json()
            return web.json_response({"id": 1, **body}, headers=headers)
        return web.json_response({"id": 1, "status": "paid"}, headers=headers)


async def serve(handler: Callable[[web.Request], object]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeOrders, str]]:
    orders = FakeOrders(fail_every=4)
    async for url in serve(orders.handle):
        yield orders, url


async def test_rate_mix_colours_and_failures_are_what_was_sent(
    fake: tuple[FakeOrders, str],
) -> None:
    orders, url = fake
    load = LoadGenerator(LoadConfig(url, rate=50, known_ids=1000, seed=7))
    acc = await load.run(duration=2.0)

    # ~100 requests in 2 s at 50/s; the schedule is by deadline, so within a few
    assert 90 <= acc.requests <= 102
    assert acc.requests == len(orders.seen) == load.progress().sent
    assert acc.rate == pytest.approx(50, rel=0.15)
    methods = [m for m, _ in orders.seen]
    assert methods.count("GET") > methods.count("POST") > methods.count("PATCH") > 0
    # every 4th v2 answer was a 500, and only those failed
    assert acc.failed_requests == orders.v2_calls // 4
    assert acc.colours["green"].failed == acc.failed_requests
    assert acc.colours["blue"].failed == 0
    assert acc.colours["blue"].requests + acc.colours["green"].requests == acc.requests
    assert acc.latency["blue"].count == acc.colours["blue"].requests
    assert load.progress().in_flight == 0


async def test_ids_come_from_the_seed_and_from_created_orders(
    fake: tuple[FakeOrders, str],
) -> None:
    orders, url = fake
    orders.fail_every = 0
    load = LoadGenerator(LoadConfig(url, rate=200, known_ids=3, mix=Mix(0.5, 0.5, 0.0), seed=1))
    await load.run(duration=1.0)
    read = {int(p.rsplit("/", 1)[1]) for m, p in orders.seen if m == "GET"}
    assert read <= set(range(1, max(next(orders.ids), 4)))
    assert max(read) > 3  # ids returned by POST were read back


async def test_phase_changes_split_the_records(fake: tuple[FakeOrders, str]) -> None:
    _, url = fake
    load = LoadGenerator(LoadConfig(url, rate=100, known_ids=10), phase="smoke")
    task = asyncio.create_task(load.run())
    await until(lambda: len(load.records) >= 20)
    load.set_phase("ramp", 10)
    await until(lambda: len(load.records) >= 40)
    load.note("green starts failing")
    await until(lambda: len(load.records) >= 60)
    load.stop()
    acc = await task
    assert [(s.entry.phase, s.entry.green_weight) for s in acc.segments] == [
        ("smoke", 0.0),
        ("ramp", 10),
        ("ramp", 10),
    ]
    assert all(s.total.requests > 0 for s in acc.segments)
    assert sum(s.total.requests for s in acc.segments) == acc.requests


async def test_a_closed_port_is_a_connect_failure_of_unknown_colour() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    load = LoadGenerator(LoadConfig(url, rate=100, known_ids=5, max_requests=10))
    acc = await load.run(duration=5.0)
    assert acc.requests == 10
    assert acc.failed_requests == 10
    assert acc.colours[UNKNOWN_COLOUR].outcomes == {"connect": 10}


async def test_requests_that_outlive_the_timeout_fail_as_timeouts() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async for url in serve(slow):
        load = LoadGenerator(
            LoadConfig(url, rate=50, known_ids=5, max_requests=3, request_timeout=0.3)
        )
        acc = await load.run()
        release.set()
    assert acc.requests == 3
    assert acc.total.outcomes == {"timeout": 3}
    assert acc.total.failed_idempotent + acc.total.failed_non_idempotent == 3
