"""Active probes against real servers: flipping, refused, hung; timing on a fixed grid."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from bluegreen.health.analysis import AnalysisConfig, Status, WindowStats, assess
from bluegreen.health.probe_state import (
    ProbeChange,
    ProbeHealth,
    ProbeSummary,
    ProbeThresholds,
    ServerProbe,
)
from bluegreen.health.probes import HealthProber, probe_once
from bluegreen.rollout_config import ProbeConfig
from bluegreen.routing import Colour

FAST = ProbeConfig(interval=0.05, timeout=0.05, first_probe_jitter=0.0)


@dataclass
class Server:
    """A health endpoint whose answer the test flips; records when probes arrive."""

    status: int = 200
    delay: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def start_server(status: int = 200, path: str = "/health") -> Server:
    server = Server(status)

    async def health(request: web.Request) -> web.Response:
        server.arrivals.append(asyncio.get_running_loop().time())
        if server.delay:
            await asyncio.sleep(server.delay)
        return web.Response(status=server.status, text="ok" if server.status < 400 else "down")

    app = web.Application()
    app.router.add_get(path, health)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    server.runner = runner
    server.port = site._server.sockets[0].getsockname()[1]
    return server


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def servers() -> AsyncIterator[MakeServer]:
    started: list[Server] = []

    async def make(status: int = 200, path: str = "/health") -> Server:
        s = await start_server(status, path)
        started.append(s)
        return s

    yield make
    for s in started:
        assert s.runner is not None
        await s.runner.cleanup()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
async def hung() -> AsyncIterator[str]:
    """A server that accepts connections and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def on_connection(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for w in writers:
        w.close()
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2)


# --------------------------------------------------------------------------- flips


async def test_a_server_flips_with_thresholds_and_reports_each_change(servers: MakeServer) -> None:
    green: Server = await servers()
    changes: list[tuple[Colour, ProbeChange]] = []
    prober = HealthProber(
        {Colour.GREEN: [green.address]},
        FAST,
        on_change=lambda colour, change: changes.append((colour, change)),
    )

    def view(p: HealthProber) -> ServerProbe:
        return p.server(Colour.GREEN, green.address)

    with capture_logs() as logs:
        async with prober:
            assert await prober.wait_until(lambda p: view(p).healthy, 5)
            assert prober.summary(Colour.GREEN) == ProbeSummary(1, 0)
            green.status = 503
            assert await prober.wait_until(lambda p: not view(p).healthy, 5)
            assert view(prober).detail.startswith("503 in ")
            assert view(prober).detail.endswith("(expected 200-399)")
            assert prober.summary(Colour.GREEN) == ProbeSummary(1, 1)
            green.status = 200
            assert await prober.wait_until(lambda p: view(p).healthy, 5)
    afters = [(c, ch.before, ch.after) for c, ch in changes]
    assert afters == [
        (Colour.GREEN, ProbeHealth.UNHEALTHY, ProbeHealth.HEALTHY),  # first success (startup)
        (Colour.GREEN, ProbeHealth.HEALTHY, ProbeHealth.UNHEALTHY),  # after 3 failures
        (Colour.GREEN, ProbeHealth.UNHEALTHY, ProbeHealth.HEALTHY),  # after 2 successes
    ]
    logged = [e for e in logs if e["event"] == "probe_health_changed"]
    assert [e["after"] for e in logged] == ["healthy", "unhealthy", "healthy"]
    assert all(e["server"] == green.address and e["colour"] == "green" for e in logged)


async def test_a_refused_server_stays_unhealthy_with_the_reason(servers: MakeServer) -> None:
    blue: Server = await servers()
    down = closed_port()
    prober = HealthProber({Colour.BLUE: [blue.address], Colour.GREEN: [down]}, FAST)
    async with prober:
        assert await prober.wait_until(lambda p: p.all_checked(), 5)
        assert await prober.wait_until(lambda p: p.probes_sent(Colour.GREEN, down) >= 3, 5)
        state = prober.server(Colour.GREEN, down)
        assert not state.healthy
        assert state.detail == f"cannot connect to {down}: connection refused"
        assert prober.summary(Colour.GREEN) == ProbeSummary(1, 1)
        blue_summary = prober.summary(Colour.BLUE)
        green_summary = prober.summary(Colour.GREEN)
    # What analysis makes of it: green fails on probes before any traffic.
    verdict = assess(
        WindowStats(),
        WindowStats(),
        AnalysisConfig(),
        candidate_probes=green_summary,
        baseline_probes=blue_summary,
    )
    assert verdict.status is Status.FAILING
    assert verdict.message == "green: 1/1 servers failing active probes, blue: 0/1"


async def test_a_hung_server_times_out_without_slowing_the_others(
    servers: MakeServer, hung: str
) -> None:
    fine: Server = await servers()
    config = ProbeConfig(interval=0.1, timeout=0.1, first_probe_jitter=0.0)
    prober = HealthProber({Colour.GREEN: [hung, fine.address]}, config)
    async with prober:
        assert await prober.wait_until(lambda p: p.probes_sent(Colour.GREEN, hung) >= 2, 5)
        assert prober.server(Colour.GREEN, hung).detail == "no answer within 0.1 s"
        assert not prober.server(Colour.GREEN, hung).healthy
        assert await prober.wait_until(lambda p: len(fine.arrivals) >= 6, 5)
    gaps = [b - a for a, b in zip(fine.arrivals, fine.arrivals[1:], strict=False)]
    assert max(gaps) < 0.18, gaps  # the hung server's 100 ms timeouts delayed nobody


# --------------------------------------------------------------------------- timing


async def test_probes_stay_on_the_interval_grid_however_slow_the_answer(
    servers: MakeServer,
) -> None:
    slow: Server = await servers()
    slow.delay = 0.03  # a third of the interval: a sleep-after-probe loop would drift 30 %
    config = ProbeConfig(interval=0.1, timeout=0.1, first_probe_jitter=0.0)
    async with HealthProber({Colour.BLUE: [slow.address]}, config) as prober:
        assert await prober.wait_until(lambda p: len(slow.arrivals) >= 11, 5)
    span = slow.arrivals[10] - slow.arrivals[0]
    assert span == pytest.approx(1.0, abs=0.08), slow.arrivals


async def test_the_first_probe_is_jittered(servers: MakeServer) -> None:
    early: Server = await servers()
    late: Server = await servers()
    draws = iter([0.0, 0.99])
    config = ProbeConfig(interval=1.0, timeout=0.5, first_probe_jitter=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    prober = HealthProber(
        {Colour.BLUE: [early.address], Colour.GREEN: [late.address]},
        config,
        rand=lambda: next(draws),
    )
    async with prober:
        assert await prober.wait_until(lambda p: p.all_checked(), 5)
    assert early.arrivals[0] - started < 0.15
    assert late.arrivals[0] - started >= 0.29


def running(prober: HealthProber) -> bool:
    return prober.running  # read through a call: each read is a fresh observation


async def test_stop_ends_probing(servers: MakeServer) -> None:
    s: Server = await servers()
    prober = HealthProber({Colour.BLUE: [s.address]}, FAST)
    await prober.start()
    assert running(prober)
    assert await prober.wait_until(lambda p: len(s.arrivals) >= 2, 5)
    await prober.stop()
    assert not running(prober)
    seen = len(s.arrivals)
    await asyncio.sleep(0.25)  # an observation window: five intervals in which nothing may arrive
    assert len(s.arrivals) == seen


async def test_a_shared_session_is_used_and_left_open(servers: MakeServer) -> None:
    s: Server = await servers()
    async with aiohttp.ClientSession() as session:
        async with HealthProber({Colour.BLUE: [s.address]}, FAST, session=session) as prober:
            assert await prober.wait_until(lambda p: p.all_checked(), 5)
        assert not session.closed


async def test_disabled_probes_do_nothing(servers: MakeServer) -> None:
    s: Server = await servers()
    prober = HealthProber({Colour.BLUE: [s.address]}, ProbeConfig(enabled=False))
    await prober.start()
    assert not prober.running
    assert prober.summary(Colour.BLUE) is None
    assert not await prober.wait_until(lambda p: p.all_checked(), 0.05)
    await prober.stop()
    assert s.arrivals == []


async def test_unchecked_servers_do_not_count_as_failing() -> None:
    prober = HealthProber(
        {Colour.GREEN: ["127.0.0.1:1", "127.0.0.1:2"]},
        ProbeConfig(thresholds=ProbeThresholds(initial=ProbeHealth.UNHEALTHY)),
    )
    summary = prober.summary(Colour.GREEN)
    assert summary is not None
    assert (summary.servers, summary.unhealthy) == (2, 0)
    assert [v.checked for v in prober.servers()] == [False, False]


# --------------------------------------------------------------------------- one probe


async def test_probe_once_tells_a_missing_endpoint_apart(servers: MakeServer) -> None:
    s: Server = await servers(path="/status")
    async with aiohttp.ClientSession() as session:
        result = await probe_once(session, s.address, ProbeConfig())
        assert not result.ok
        assert result.status == 404
        assert not result.implemented
        assert result.detail == "404 for GET /health: no health endpoint there"
        found = await probe_once(session, s.address, ProbeConfig(path="/status"))
        assert found.ok
        assert found.implemented
        assert found.detail.startswith("200 in ")


async def test_probe_once_timing_is_bounded(hung: str) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        result = await probe_once(session, hung, ProbeConfig(timeout=0.2, interval=1))
    assert time.monotonic() - started < 1
    assert (result.ok, result.status, result.implemented) == (False, None, False)
