"""``bluegreen serve`` as a real process: drain on signals, exit codes, uvloop, memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.integration.rawhttp import RawClient, get
from tests.integration.replica_procs import ServeReplica
from tests.integration.upstreams import Upstream, start_upstream

MB = 1024 * 1024
pytestmark = pytest.mark.asyncio(loop_scope="module")
# Each serve gets its own state file and an admin API on a free port, so several
# can run at once and none writes .bluegreen/ into the working directory.
_STATE_DIR = tempfile.TemporaryDirectory(prefix="bluegreen-serve-tests-")


def control_args(port: int) -> list[str]:
    """``--admin`` and ``--state`` for a serve process listening on ``port``."""
    return ["--admin", "127.0.0.1:0", "--state", f"file:{_STATE_DIR.name}/state-{port}.json"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """A ``bluegreen serve`` subprocess and what it printed."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.stderr_lines: list[str] = []

    @classmethod
    async def start(cls, *args: str) -> ServeProcess:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bluegreen", "serve", "--listen", f"127.0.0.1:{port}",
            *control_args(port), "--workers", "1", *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        serve = cls(proc, port)
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while True:
                line = (await proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"serve exited early: {serve.stderr_lines}")
                serve.stderr_lines.append(line)
                if '"proxy_listening"' in line:
                    return serve

    def rss_kib(self, field: str = "VmRSS") -> int:
        """Resident memory of the process (VmRSS now, VmHWM peak) in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)

    async def finish(self, within: float = 20) -> tuple[int, str, list[dict[str, object]]]:
        """Wait for exit: (code, stdout, stderr events)."""
        async with asyncio.timeout(within):
            out, err = await self.proc.communicate()
        lines = [*self.stderr_lines, *err.decode().splitlines(keepends=True)]
        events = [json.loads(line) for line in lines if line.startswith("{")]
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), events

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


async def refuses_connections(port: int, within: float = 5) -> bool:
    """Poll until connecting to ``port`` is refused (the listener closes asynchronously)."""
    async with asyncio.timeout(within):
        while True:
            try:
                probe = await RawClient.connect("127.0.0.1", port)
            except ConnectionRefusedError:
                return True
            await probe.close()
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    blue, green = await start_upstream("blue"), await start_upstream("green")
    yield blue, green
    await blue.close()
    await green.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(upstreams: tuple[Upstream, Upstream]) -> AsyncIterator[ServeProcess]:
    """One long-running proxy process (uvloop) shared by the read-only tests."""
    blue, green = upstreams
    serve = await ServeProcess.start("--blue", blue.address, "--green", green.address)
    yield serve
    serve.proc.send_signal(signal.SIGTERM)
    await serve.finish()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_in_flight_requests_then_exits_0(
    signum: signal.Signals, upstreams: tuple[Upstream, Upstream]
) -> None:
    blue, green = upstreams
    blue.hold_next()
    serve = await ServeProcess.start("--blue", blue.address, "--green", green.address)
    try:
        idle = await RawClient.connect("127.0.0.1", serve.port)
        assert (await idle.request(get())).status == 200
        busy = await RawClient.connect("127.0.0.1", serve.port)
        await busy.send(get("/hold"))
        await asyncio.wait_for(blue.held.wait(), 5)

        serve.proc.send_signal(signum)
        assert await idle.closed()  # idle keep-alive connections close at once
        await idle.close()
        assert await refuses_connections(serve.port)  # no longer accepting
        blue.release.set()
        response = await busy.response()
        assert response.status == 200
        assert response.body == b"released blue"
        assert response.header("connection") == b"close"
        await busy.close()
        code, stdout, events = await serve.finish()
    finally:
        serve.kill()
        blue.release.set()
    assert code == 0
    names = [e["event"] for e in events]
    assert names[-2:] == ["drain_started", "proxy_stopped"]
    assert events[-1]["drained"] is True
    access = [json.loads(line) for line in stdout.splitlines()]
    assert [a["path"] for a in access] == ["/", "/hold"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--blue", "127.0.0.1:1", "--green", "127.0.0.1:70000"], "--green[0]: port 70000"),
        (["--blue", "127.0.0.1:1"], "upstreams.green.servers"),
        (["--blue", "a:1", "--green", "b:2", "--green-weight", "150"], "--green-weight"),
        (["--config", "{bad}"], "upstreams.green.servers[0]: port 70000 out of range"),
        (["--config", "{unknown}"], "timeouts.conect: unknown key"),
    ],
    ids=["bad-port-flag", "missing-green", "weight-out-of-range", "bad-port-file", "typo"],
)
async def test_config_errors_exit_2_naming_the_key(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "upstreams:\n  blue: {servers: ['127.0.0.1:1']}\n  green: {servers: ['127.0.0.1:70000']}\n"
    )
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("timeouts:\n  conect: 3s\n")
    args = [a.format(bad=bad, unknown=unknown) for a in args]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert expected in err.decode()


async def second_serve_on(port: int, *workers: str) -> tuple[int | None, str]:
    """Start another ``serve`` on ``port``: (exit code, stderr); killed if still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", "serve", "--listen", f"127.0.0.1:{port}",
        "--blue", "127.0.0.1:1", "--green", "127.0.0.1:2", *control_args(0), *workers,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:  # it is serving on the same port: the bug under test
            proc.kill()
            await proc.wait()
            err = b""
    return proc.returncode, err.decode()


@pytest.mark.parametrize("workers", [["--workers", "1"], ["--workers", "2"]], ids=["one", "two"])
async def test_address_in_use_exits_2(served: ServeProcess, workers: list[str]) -> None:
    code, err = await second_serve_on(served.port, *workers)
    assert code == 2
    assert "listeners.proxy: cannot listen" in err


async def test_a_port_held_by_workers_is_not_shared_with_a_second_serve(tmp_path: Path) -> None:
    # Workers listen with SO_REUSEPORT; a second serve must still find the port taken.
    first = await ServeReplica.start(
        f"file:{tmp_path / 'state.json'}", "127.0.0.1:1", "127.0.0.1:2", "--workers", "2"
    )
    try:
        for workers in (["--workers", "1"], ["--workers", "2"]):
            code, err = await second_serve_on(first.port, *workers)
            assert code == 2, workers
            assert "listeners.proxy: cannot listen" in err
    finally:
        await first.stop(within=30)


async def test_served_process_uses_uvloop(served: ServeProcess) -> None:
    (listening,) = [line for line in served.stderr_lines if "proxy_listening" in line]
    assert json.loads(listening)["event_loop"] == "uvloop"


async def test_uvloop_head_pipelining_and_chunking(served: ServeProcess) -> None:
    client = await RawClient.connect("127.0.0.1", served.port)
    await client.send(
        b"HEAD /head-body HTTP/1.1\r\nHost: h\r\n\r\n"
        + get("/chunked/100000")
        + b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"3\r\nabc\r\n0\r\n\r\n"
        + get("/status/304")
    )
    head = await client.response(head=True)
    assert head.header("content-length") == b"5"
    chunked = await client.response()
    assert (chunked.framing, len(chunked.body), chunked.complete) == ("chunked", 100000, True)
    upload = await client.response()
    assert b'"received": 3' in upload.body
    assert (await client.response()).status == 304
    await client.close()


async def test_uvloop_websocket_and_sse(
    served: ServeProcess, upstreams: tuple[Upstream, Upstream]
) -> None:
    blue, _ = upstreams
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{served.port}/ws") as ws,
    ):
        assert await ws.receive_str(timeout=5) == "hello from blue"
        await ws.send_str("x")
        assert await ws.receive_str(timeout=5) == "blue: x"
    client = await RawClient.connect("127.0.0.1", served.port)
    await client.send(get("/sse"))
    await client.read_until(b"\r\n\r\n")
    await blue.sse.put("one")
    assert (await client.read_until(b"\n\n")).endswith(b"data: one\n\n")
    await blue.sse.put(None)
    await client.read_until(b"0\r\n\r\n")
    await client.close()


async def test_100_mb_through_the_process_keeps_its_memory_flat(served: ServeProcess) -> None:
    before = served.rss_kib()
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(get(f"/bytes/{100 * MB}"))
    await reader.readuntil(b"\r\n\r\n")
    got = 0
    async with asyncio.timeout(60):
        while got < 100 * MB:
            data = await reader.read(256 * 1024)
            assert data
            got += len(data)
    writer.close()
    await writer.wait_closed()
    peak = served.rss_kib("VmHWM")
    growth_mib = (peak - before) / 1024
    assert growth_mib < 32, f"RSS grew {growth_mib:.1f} MiB while 100 MiB passed"


async def test_access_log_lines_reach_stdout(
    upstreams: tuple[Upstream, Upstream], tmp_path: Path
) -> None:
    blue, green = upstreams
    log = tmp_path / "access.log"
    config = tmp_path / "c.yaml"
    config.write_text(f"access_log:\n  path: {log}\n")
    serve = await ServeProcess.start(
        "--config", str(config), "--blue", blue.address, "--green", green.address
    )
    try:
        client = await RawClient.connect("127.0.0.1", serve.port)
        for i in range(3):
            await client.request(get(f"/{i}"))
        await client.close()
        serve.proc.send_signal(signal.SIGTERM)
        code, stdout, _ = await serve.finish()
    finally:
        serve.kill()
    assert code == 0
    assert stdout == ""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["path"] for r in records] == ["/0", "/1", "/2"]
    assert {r["colour"] for r in records} == {"blue"}
    # Durations come from a clock finer than uvloop's millisecond loop time.
    assert any(round(r["duration_s"] * 1e6) % 1000 for r in records)


async def test_a_signal_during_the_clean_up_after_the_drain_exits_1(
    upstreams: tuple[Upstream, Upstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second SIGTERM while the control plane closes cuts the clean-up: exit 1, not -15."""
    from bluegreen.config import Config, with_overrides
    from bluegreen.replica import ControlPlane
    from bluegreen.serve import serve

    blue, green = upstreams
    config = with_overrides(
        Config(),
        listen=f"127.0.0.1:{free_port()}",
        blue=[blue.address],
        green=[green.address],
        state=f"file:{tmp_path / 'state.json'}",
        admin="127.0.0.1:0",
        workers="1",
    )
    close = ControlPlane.close
    cleaning = asyncio.Event()

    async def slow_close(self: ControlPlane) -> None:
        # The drain is over; the clean-up now takes long enough for a second signal.
        cleaning.set()
        try:
            await asyncio.sleep(30)
        finally:
            await close(self)  # the test's own clean-up

    monkeypatch.setattr(ControlPlane, "close", slow_close)
    listening = asyncio.Event()
    served = asyncio.ensure_future(serve(config, ready=lambda _proxy: listening.set()))
    await asyncio.wait_for(listening.wait(), 20)
    os.kill(os.getpid(), signal.SIGTERM)  # the drain: nothing in flight, over at once
    await asyncio.wait_for(cleaning.wait(), 20)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(served, 5) == 1
    # The handlers are gone with serve: the default action is back.
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)


async def test_a_second_signal_during_the_drain_cuts_and_exits_1(
    upstreams: tuple[Upstream, Upstream],
) -> None:
    blue, green = upstreams
    blue.hold_next()
    serve = await ServeProcess.start("--blue", blue.address, "--green", green.address)
    try:
        busy = await RawClient.connect("127.0.0.1", serve.port)
        await busy.send(get("/hold"))
        await asyncio.wait_for(blue.held.wait(), 5)
        serve.proc.send_signal(signal.SIGTERM)
        assert await refuses_connections(serve.port)  # draining: the request still in flight
        serve.proc.send_signal(signal.SIGTERM)
        code, _, events = await serve.finish()
        assert await busy.closed()  # cut, without a response
        await busy.close()
    finally:
        serve.kill()
        blue.release.set()
    assert code == 1
    assert "drain_forced" in [e["event"] for e in events]
