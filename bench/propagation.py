"""Weight-change propagation through the admin API to 3 ``bluegreen serve`` replicas.

Run ``python -m bench.propagation [--dsn URL] [--changes 100] [--replicas 3]``.

End to end, as an operator sees it: three real ``bluegreen serve`` processes
share a PostgreSQL state store (a scratch database, dropped afterwards) in
front of two local upstreams. Each change is one ``PUT /api/v1/weights`` on
one replica's admin API (rotating), with ``?wait=5s``. Two figures per change:

* **applied** — from the moment the PUT was sent to the moment each replica
  pushed the new weights into its proxy (its ``weights_applied`` log record;
  all processes share the host's clock). This is when traffic moves.
* **confirmed** — the PUT's round trip: the write, then every live replica's
  heartbeat reporting the new version (what ``--wait`` and a rollout step
  wait for).

At the end, 100 unkeyed requests through each proxy must show the last
weight exactly. The table gives p50/p90/p99/max in milliseconds; the exit
code is 1 if the applied p99 misses the 200 ms target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bench.state_propagation import DEFAULT_DSN, TARGET_P99_MS, nearest_rank, scratch_database
from bluegreen.state.store import mask_dsn

TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - a throwaway token for local processes


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """A ``bluegreen serve`` process and the moments it applied each version."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, port: int) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.admin_url = ""
        self.applied: dict[int, float] = {}  # version -> wall-clock seconds
        self.listening = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            if not line.startswith(b"{"):
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                event = record.get("event")
                if event == "weights_applied":
                    at = datetime.fromisoformat(record["timestamp"]).timestamp()
                    self.applied[int(record["version"])] = at
                elif event == "proxy_listening":
                    self.admin_url = str(record["admin"])
                    self.listening.set()

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        await asyncio.wait_for(self.proc.wait(), 30)
        self.task.cancel()


async def start_replica(name: str, dsn: str, blue: str, green: str) -> Replica:
    port = free_port()
    env = {**os.environ, "BLUEGREEN_ADMIN_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", "serve", "--listen", f"127.0.0.1:{port}",
        "--admin", "127.0.0.1:0", "--state", dsn, "--blue", blue, "--green", green,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    replica = Replica(name, proc, port)
    try:
        await asyncio.wait_for(replica.listening.wait(), 30)
    except TimeoutError:
        await replica.stop()
        raise RuntimeError(f"{name} did not start") from None
    return replica


async def start_upstream(colour: str) -> tuple[web.AppRunner, str]:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(text=colour, headers={"X-Upstream-Colour": colour})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"127.0.0.1:{port}"


async def greens_of(session: aiohttp.ClientSession, replica: Replica, count: int = 100) -> int:
    green = 0
    for _ in range(count):
        async with session.get(f"http://127.0.0.1:{replica.port}/") as response:
            green += response.headers["X-Upstream-Colour"] == "green"
            await response.read()
    return green


async def run(admin_dsn: str, changes: int, replicas: int, gap: float) -> int:
    blue_runner, blue = await start_upstream("blue")
    green_runner, green = await start_upstream("green")
    try:
        async with scratch_database(admin_dsn) as dsn:
            started: list[Replica] = []
            try:
                for i in range(replicas):
                    started.append(await start_replica(f"replica{i + 1}", dsn, blue, green))
                return await measure(admin_dsn, dsn, started, changes, gap)
            finally:
                for replica in started:
                    await replica.stop()
    finally:
        await blue_runner.cleanup()
        await green_runner.cleanup()


async def measure(
    admin_dsn: str, dsn: str, replicas: list[Replica], changes: int, gap: float
) -> int:
    sent: dict[int, float] = {}
    confirmed_ms: list[float] = []
    not_confirmed = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        last = 0
        for i in range(changes):
            green = 1 + (i * 37) % 99  # whole percents 1..99, never the same twice in a row
            target = replicas[i % len(replicas)]
            before = time.time()
            async with session.put(
                f"{target.admin_url}/api/v1/weights",
                json={"green": green},
                params={"wait": "5s"},
                headers=headers,
            ) as response:
                body = await response.json()
            after = time.time()
            if response.status not in (200, 202):
                raise RuntimeError(f"PUT answered {response.status}: {body}")
            version = int(body["weights"]["version"])
            sent[version] = before
            confirmed_ms.append((after - before) * 1000)
            not_confirmed += not body["applied"]["all_applied"]
            last = green
            await asyncio.sleep(gap)
        deadline = time.monotonic() + 10
        while any(v not in r.applied for r in replicas for v in sent):
            if time.monotonic() > deadline:
                raise RuntimeError("some replicas never logged applying some versions")
            await asyncio.sleep(0.05)
        traffic = [await greens_of(session, r) for r in replicas]
    applied = {r.name: sorted((r.applied[v] - t) * 1000 for v, t in sent.items()) for r in replicas}
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        server = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    return report(
        admin_dsn, server, changes, applied, sorted(confirmed_ms), not_confirmed, last, traffic
    )


def report(
    dsn: str,
    server: str,
    changes: int,
    applied: dict[str, list[float]],
    confirmed: list[float],
    not_confirmed: int,
    last: int,
    traffic: list[int],
) -> int:
    """Print the table; return the exit code (1 if a target or the traffic check fails)."""
    everything = sorted(x for values in applied.values() for x in values)
    print(
        f"weight propagation: {changes} PUT /api/v1/weights (rotating over {len(applied)} "
        f"`bluegreen serve` replicas), PostgreSQL {server} at {mask_dsn(dsn)}"
    )
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs; milliseconds from the "
        "PUT being sent"
    )
    print()
    print(f"{'':<30}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    rows = [(f"applied by {name}", values) for name, values in applied.items()]
    rows.append(("applied, all replicas", everything))
    rows.append(("confirmed (PUT ?wait returned)", confirmed))
    for name, values in rows:
        cells = [nearest_rank(values, q) for q in (0.5, 0.9, 0.99, 1.0)]
        print(f"{name:<30}" + "".join(f"{c:>9.1f}" for c in cells))
    p99 = nearest_rank(everything, 0.99)
    confirmed_p99 = nearest_rank(confirmed, 0.99)
    print()
    print(f"not confirmed within 5 s: {not_confirmed} of {changes}")
    print(f"last weight {last}% green; green answers out of 100 per replica: {traffic}")
    ok = p99 <= TARGET_P99_MS and all(t == last for t in traffic) and not not_confirmed
    verdict = "met" if p99 <= TARGET_P99_MS else "MISSED"
    print(
        f"target applied p99 <= {TARGET_P99_MS:.0f} ms: {verdict} (p99 {p99:.1f} ms; "
        f"confirmed p99 {confirmed_p99:.1f} ms)"
    )
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.propagation", description=__doc__)
    parser.add_argument(
        "--dsn",
        default=os.environ.get("BLUEGREEN_TEST_DSN", DEFAULT_DSN),
        help="server to use (a scratch database is created there); default $BLUEGREEN_TEST_DSN "
        f"or {DEFAULT_DSN}",
    )
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between changes")
    args = parser.parse_args(argv)
    result: Any = asyncio.run(run(args.dsn, args.changes, args.replicas, args.gap))
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
