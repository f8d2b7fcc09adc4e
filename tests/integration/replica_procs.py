"""``bluegreen serve`` replicas as real processes, for control-plane tests and the bench.

:class:`Replica` starts one process with its proxy and admin API on free
loopback ports and reads the admin URL from its ``proxy_listening`` log
line. :func:`colours_of` sends unkeyed requests through a proxy and returns
the colour that answered each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import aiohttp


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeReplica:
    """One ``bluegreen serve`` process: proxy port, admin URL, its log events."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.admin_url = ""
        self.events: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def proxy_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(
        cls,
        state: str,
        blue: str,
        green: str,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> ServeReplica:
        """Start a replica on ``state``; returns once it serves (raises if it exits first)."""
        port = port or free_port()
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_ADMIN")}
        environ.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bluegreen", "serve",
            "--listen", f"127.0.0.1:{port}", "--admin", "127.0.0.1:0", "--state", state,
            "--blue", blue, "--green", green, "--workers", "1", *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=environ,
        )  # fmt: skip
        replica = cls(proc, port)
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"serve exited early: {replica.events}")
                replica._record(line)
                if replica.events and replica.events[-1].get("event") == "proxy_listening":
                    replica.admin_url = str(replica.events[-1]["admin"])
                    break
        replica._reader = asyncio.create_task(replica._read_rest())
        return replica

    def _record(self, line: str) -> None:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    async def _read_rest(self) -> None:
        assert self.proc.stderr is not None
        while line := (await self.proc.stderr.readline()).decode():
            self._record(line)

    def logged(self, event: str) -> list[dict[str, Any]]:
        """Every log record of ``event`` so far."""
        return [e for e in self.events if e.get("event") == event]

    async def stop(self, sig: int = signal.SIGTERM, within: float = 30) -> int:
        """Signal the process and wait for its exit code."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        async with asyncio.timeout(within):
            code = await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)
        return code


async def stop_all(replicas: Sequence[ServeReplica]) -> None:
    """SIGTERM every replica and wait for them (kill what does not stop)."""
    for replica in replicas:
        with contextlib.suppress(ProcessLookupError):
            replica.proc.send_signal(signal.SIGTERM)
    for replica in replicas:
        try:
            await replica.stop(within=30)
        except TimeoutError:
            replica.proc.kill()
            await replica.proc.wait()


async def colours_of(session: aiohttp.ClientSession, proxy_url: str, count: int = 100) -> list[str]:
    """The colour that answered each of ``count`` unkeyed GETs through a proxy."""
    colours = []
    for _ in range(count):
        async with session.get(f"{proxy_url}/") as response:
            assert response.status == 200, await response.text()
            colours.append(response.headers["X-Upstream-Colour"])
            await response.read()
    return colours
