"""bench/pacer.c against a real server on 127.0.0.1: it holds its rate and sees stalls."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from bench import pacer
from bench.procs import Supervisor
from bench.stats import RateResult

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (gcc)")

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: stall-test\r\n\r\nok"


class StallingServer:
    """Answers every GET at once, except during one pause after the first request."""

    def __init__(self, pause_after: float, pause_for: float) -> None:
        self.pause_after = pause_after
        self.pause_for = pause_for
        self.first: float | None = None
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                now = time.monotonic()
                if self.first is None:
                    self.first = now
                self.requests += 1
                resume = self.first + self.pause_after + self.pause_for
                if self.first + self.pause_after <= now < resume:
                    await asyncio.sleep(resume - now)  # the stall under test
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _run_pacer(tmp_path: Path, port: int, *, rate: float, duration: float) -> RateResult:
    with Supervisor(tmp_path) as sup:
        binary = await asyncio.to_thread(pacer.build, tmp_path, sup)
    samples = tmp_path / "samples.bin"
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        str(port),
        "/",
        str(rate),
        "10",
        "0",
        str(duration),
        str(samples),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=duration + 30)
    assert proc.returncode == 0, err.decode()
    return pacer.parse_result(out.decode(), samples.read_bytes())


async def test_holds_the_rate_against_a_fast_server(tmp_path: Path) -> None:
    server = StallingServer(pause_after=1e9, pause_for=0)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        result = await _run_pacer(tmp_path, port, rate=500, duration=1.0)
    assert result.released == 500
    assert result.completed == 500
    assert result.completed_total == 500
    assert result.achieved_rate == pytest.approx(500, rel=0.05)
    assert result.errors == result.unanswered == 0
    assert server.requests == 500
    assert result.latency["p50"] < 0.05


async def test_a_server_stall_shows_in_the_latency(tmp_path: Path) -> None:
    # 1000 req/s for 1 s; the server stops answering for 200 ms after 300 ms.
    # A closed-loop tool would record only the 10 requests caught in the stall;
    # here every request due during it waits, so about a fifth of all samples
    # are slow and the slowest waited almost the whole stall.
    server = StallingServer(pause_after=0.3, pause_for=0.2)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        result = await _run_pacer(tmp_path, port, rate=1000, duration=1.0)
    assert result.completed == result.released == 1000
    assert result.errors == 0
    assert result.max_backlog > 100
    assert result.latency["p50"] < 0.05
    assert result.latency["p90"] > 0.05
    assert result.latency["max"] > 0.15


async def test_connection_refused_fails_loudly(tmp_path: Path) -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    with Supervisor(tmp_path) as sup:
        binary = await asyncio.to_thread(pacer.build, tmp_path, sup)
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        str(port),
        "/",
        "10",
        "1",
        "0",
        "1",
        str(tmp_path / "s.bin"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 1
    assert b"connect to 127.0.0.1" in err


async def test_connection_close_responses_reconnect_without_errors(tmp_path: Path) -> None:
    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(one_shot, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        result = await _run_pacer(tmp_path, port, rate=200, duration=0.5)
    assert result.completed == result.released == 100
    assert result.errors == 0
    assert result.reconnects == 100
