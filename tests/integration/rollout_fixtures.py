"""What the rollout tests share: upstream processes, serve processes, config, waiting.

* :class:`UpstreamProc` — ``tests.integration.rollout_upstream`` in its own
  process (answers with its colour; can be told to fail, or be killed).
* :func:`write_config` — a ``bluegreen.yaml`` with short bakes and a fast
  analysis, migrations from :func:`write_migrations` on a real database.
* :class:`Api` — the admin API of a replica, with :meth:`Api.wait_for` to
  wait on the rollout with a deadline (never a fixed sleep).
* :class:`Traffic` — a bounded client loop through a proxy counting failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.integration.replica_procs import ServeReplica, free_port

TOKEN = "rollout-test-token-0123456789"  # noqa: S105 - a test token
ANALYSIS_INTERVAL = 0.3
FAILURE_LIMIT = 2

MIGRATIONS = {
    "0001_orders_create.sql": """-- bluegreen:phase expand
-- bluegreen:up
CREATE TABLE orders (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status text NOT NULL
);

-- bluegreen:down
-- bluegreen:ignore ban-drop-table undoing the first migration
DROP TABLE orders;
""",
    "0002_orders_add_status_code.sql": """-- bluegreen:phase expand
-- bluegreen:up
ALTER TABLE orders ADD COLUMN status_code text;

-- bluegreen:down
-- bluegreen:ignore ban-drop-column undoing this expand
ALTER TABLE orders DROP COLUMN IF EXISTS status_code;
""",
    "0003_orders_backfill.sql": """-- bluegreen:phase migrate
-- bluegreen:up
-- bluegreen:backfill batch-size=100
UPDATE orders SET status_code = status
WHERE status_code IS NULL AND status IS NOT NULL;

-- bluegreen:down
SELECT 1;
""",
    "0004_orders_drop_status.sql": """-- bluegreen:phase contract
-- bluegreen:up
ALTER TABLE orders DROP COLUMN status;

-- bluegreen:down
ALTER TABLE orders ADD COLUMN status text;
""",
}


def write_migrations(directory: Path) -> Path:
    """The test migrations (expand, expand, migrate, contract) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in MIGRATIONS.items():
        (directory / name).write_text(text)
    return directory


# --------------------------------------------------------------------------- upstreams


class UpstreamProc:
    """One application server process answering as ``colour``."""

    def __init__(self, colour: str, proc: asyncio.subprocess.Process, port: int) -> None:
        self.colour = colour
        self.proc = proc
        self.port = port

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @classmethod
    async def start(cls, colour: str) -> UpstreamProc:
        """Start it and wait until it answers /health."""
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.rollout_upstream", colour, str(port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        up = cls(colour, proc, port)
        async with aiohttp.ClientSession() as session:
            await wait_until(lambda: up._healthy(session), 20, f"{colour} upstream to start")
        return up

    async def _healthy(self, session: aiohttp.ClientSession) -> bool:
        if self.proc.returncode is not None:
            raise AssertionError(f"{self.colour} upstream exited with {self.proc.returncode}")
        try:
            async with session.get(f"http://{self.address}/health") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def control(self, **settings: bool) -> None:
        """Switch failure modes (fail, fail_health) or release held requests."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://{self.address}/__control", json=settings) as response,
        ):
            assert response.status == 200

    async def kill(self) -> None:
        """SIGKILL: the application crashed."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        """Stop it (idempotent)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                await self.kill()


# --------------------------------------------------------------------------- config


def write_config(
    path: Path,
    *,
    migrations: Path | None = None,
    database_url: str | None = None,
    steps: list[dict[str, Any]] | None = None,
    rollout: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    analysis: dict[str, Any] | None = None,
    smoke: dict[str, Any] | None = None,
) -> Path:
    """A config with short bakes and fast analysis (upstreams come from the command line)."""
    rollout_section: dict[str, Any] = {
        "steps": steps
        or [
            {"weight": 10, "bake": "1s"},
            {"weight": 50, "bake": "1s"},
            {"weight": 100, "bake": "500ms"},
        ],
        "confirm_timeout": "10s",
        "drain_timeout": "5s",
        "contract_grace": "1s",
        "leadership_retry": "300ms",
    }
    if migrations is not None:
        rollout_section["migrations"] = {
            "directory": str(migrations),
            "database_url": database_url,
        }
    rollout_section.update(rollout or {})
    analysis_section = {
        "interval": f"{ANALYSIS_INTERVAL}s",
        "min_requests": 10,
        "consecutive_failure_limit": FAILURE_LIMIT,
        # Latency on a loaded 2-core test machine is noise, not a regression.
        "p99_floor": "2s",
    }
    analysis_section.update(analysis or {})
    doc = {
        "admin": {"token": TOKEN},
        "access_log": {"enabled": False},
        "state": {"heartbeat_interval": "500ms", "replica_expiry": "2s", **(state or {})},
        "timeouts": {"drain": "2s"},
        "health": {
            "probes": {"interval": "200ms", "timeout": "150ms", "unhealthy_threshold": 2},
            "analysis": analysis_section,
        },
        "preflight": {"items": {"backup_recent": "skip"}},
        "rollout": rollout_section,
    }
    if smoke is not None:
        doc["smoke"] = smoke
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def start_serve(
    state: str, blue: UpstreamProc, green: UpstreamProc, config: Path, *, port: int | None = None
) -> ServeReplica:
    """A ``bluegreen serve`` process with this config."""
    return await ServeReplica.start(
        state, blue.address, green.address, "--config", str(config), port=port
    )


# --------------------------------------------------------------------------- waiting


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float, what: str, *, every: float = 0.05
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class Api:
    """A replica's admin API."""

    url: str
    session: aiohttp.ClientSession
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """The bearer token."""
        return {"Authorization": f"Bearer {TOKEN}"}

    async def get(self) -> dict[str, Any]:
        """GET /api/v1/rollout."""
        async with self.session.get(f"{self.url}/api/v1/rollout") as response:
            assert response.status == 200, await response.text()
            self.last = await response.json()
            return self.last

    async def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """POST /api/v1/rollout[/path] with the token; (status, JSON)."""
        url = f"{self.url}/api/v1/rollout{path}"
        kwargs: dict[str, Any] = {"headers": self.headers}
        if body is not None:
            kwargs["json"] = body
        async with self.session.post(url, **kwargs) as response:
            return response.status, await response.json()

    async def start(self, version: str, **body: Any) -> dict[str, Any]:
        """Start a rollout; asserts 201."""
        status, answer = await self.post("", {"version": version, **body})
        assert status == 201, answer
        return dict(answer)

    async def put_weights(self, green: float) -> None:
        """PUT /api/v1/weights (an operator's manual change)."""
        async with self.session.put(
            f"{self.url}/api/v1/weights", json={"green": green}, headers=self.headers
        ) as response:
            assert response.status == 200, await response.text()

    async def state(self) -> dict[str, Any]:
        """GET /api/v1/state."""
        async with self.session.get(f"{self.url}/api/v1/state") as response:
            assert response.status == 200
            return dict(await response.json())

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], within: float, what: str
    ) -> dict[str, Any]:
        """Poll GET /api/v1/rollout until ``predicate(view)``; the view (unreachable retried)."""

        async def check() -> bool:
            try:
                return predicate(await self.get())
            except (aiohttp.ClientError, OSError):
                return False

        try:
            await wait_until(check, within, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last view: {json.dumps(self.last)[:2000]}") from None
        return self.last


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    """Predicate: the rollout is in one of ``phases``."""
    return lambda view: view.get("phase") in phases


def baking(step: int) -> Callable[[dict[str, Any]], bool]:
    """Predicate: baking step ``step`` (1-based)."""
    return lambda view: view.get("phase") == "bake" and view.get("step") == step


def log_entries(view: dict[str, Any], fact: str) -> list[dict[str, Any]]:
    """The rollout log entries of ``fact``."""
    record = view.get("rollout") or {}
    return [e for e in record.get("log", []) if e.get("fact") == fact]


# --------------------------------------------------------------------------- traffic


class Traffic:
    """``clients`` keep-alive loops sending GETs through a proxy until stopped (bounded)."""

    def __init__(self, proxy_url: str, *, clients: int = 4, max_seconds: float = 120.0) -> None:
        self.proxy_url = proxy_url
        self.clients = clients
        self.max_seconds = max_seconds
        self.ok = 0
        self.failures: list[str] = []
        self.colours: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Traffic:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.clients)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop the loops and close the session."""
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def total(self) -> int:
        """Requests sent so far."""
        return self.ok + len(self.failures)

    async def _loop(self) -> None:
        assert self._session is not None
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                async with self._session.get(f"{self.proxy_url}/orders") as response:
                    await response.read()
                    colour = response.headers.get("X-Upstream-Colour", "?")
                    if response.status == 200:
                        self.ok += 1
                        self.colours[colour] = self.colours.get(colour, 0) + 1
                    else:
                        self.failures.append(f"{response.status} from {colour}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.005)
