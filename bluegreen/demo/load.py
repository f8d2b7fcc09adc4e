"""A bounded, paced, mixed read/write load against the orders API, with every request recorded.

Open loop, like wrk2 or vegeta rather than a fixed number of looping
clients: request *n* is due at ``start + n / rate`` (monotonic clock), and is
sent then whether or not earlier ones have been answered, so a slow or
failing upstream shows up as latency and failures instead of silently
lowering the rate. In-flight requests are bounded (``max_in_flight``); if
the event loop stalls for more than a second the schedule restarts from now
instead of sending a burst.

The mix (default 70 % ``GET /orders/{id}``, 20 % ``POST /orders``, 10 %
``PATCH /orders/{id}``) uses ids known to exist: the seeded ones and those
the POSTs returned. Each request becomes a
:class:`~bluegreen.demo.report.RequestRecord` with its colour (from
``X-App-Version``) and the timeline segment current when it started; the
orchestrator moves the timeline with :meth:`LoadGenerator.set_phase` as the
rollout goes. :meth:`LoadGenerator.accounting` counts it all (see
:mod:`bluegreen.demo.report`, which is pure).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from bluegreen.demo.app import STATUSES, VERSION_HEADER
from bluegreen.demo.report import (
    UNKNOWN_COLOUR,
    Accounting,
    RequestRecord,
    TimelineEntry,
    account,
)

DEFAULT_COLOURS: Final[Mapping[str, str]] = {"v1": "blue", "v2": "green"}
_STALL_RESET: Final = 1.0  # seconds behind schedule after which the schedule restarts
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of the three operations; they must add up to 1."""

    get: float = 0.70
    create: float = 0.20
    update: float = 0.10

    def __post_init__(self) -> None:
        shares = (self.get, self.create, self.update)
        if any(s < 0 or not math.isfinite(s) for s in shares) or not math.isclose(
            sum(shares), 1.0, abs_tol=1e-6
        ):
            raise ValueError(f"mix shares must be >= 0 and add up to 1, got {shares}")

    def pick(self, draw: float) -> str:
        """The operation for a uniform draw in [0, 1)."""
        if draw < self.get:
            return "get"
        if draw < self.get + self.create:
            return "create"
        return "update"


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What to send where, how fast and for how long at most."""

    base_url: str
    rate: float = 200.0  # requests per second
    mix: Mix = field(default_factory=Mix)
    request_timeout: float = 5.0
    max_in_flight: int = 256
    connections: int = 32
    known_ids: int = 0  # orders 1..known_ids exist already (the seed)
    colours: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COLOURS))
    max_requests: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seed: int | None = None  # for a reproducible sequence of operations

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and 0 < self.rate <= 100_000):
            raise ValueError(f"rate must be 0 < rate <= 100000 requests/s, got {self.rate}")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if self.max_in_flight < 1 or self.connections < 1:
            raise ValueError("max_in_flight and connections must be at least 1")
        if self.known_ids < 0:
            raise ValueError("known_ids must be >= 0")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")


@dataclass(frozen=True, slots=True)
class Progress:
    """A live view for progress lines: counts so far."""

    elapsed: float
    sent: int
    answered: int
    failed: int
    in_flight: int
    phase: str
    green_weight: float


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one too
        return "timeout"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "payload"
    if isinstance(exc, aiohttp.ClientOSError):
        return "connection_error"
    return "client_error"


class LoadGenerator:
    """Sends the load; records every request; counts them on demand."""

    def __init__(
        self,
        config: LoadConfig,
        *,
        phase: str = "idle",
        green_weight: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random(config.seed)
        self._t0: float | None = None
        self._stop = False
        self._colours = dict(config.colours)
        self._max_id = config.known_ids
        self._in_flight = 0
        self._sent = 0
        self._failed = 0
        self.records: list[RequestRecord] = []
        self.timeline: list[TimelineEntry] = [TimelineEntry(0.0, phase, green_weight)]
        self.stalls = 0  # times the schedule restarted after the loop fell behind

    # ------------------------------------------------------------------ orchestrator side

    def now(self) -> float:
        """Seconds since the load started (0 before it starts)."""
        return 0.0 if self._t0 is None else self._clock() - self._t0

    def set_phase(
        self, phase: str, green_weight: float | None = None, *, note: str = ""
    ) -> TimelineEntry:
        """Start a new timeline segment: requests from now on count for it."""
        weight = self.timeline[-1].green_weight if green_weight is None else green_weight
        entry = TimelineEntry(self.now(), phase, weight, note)
        if self._t0 is None and len(self.timeline) == 1 and not self.records:
            self.timeline[0] = entry  # before the start: replace the initial segment
        else:
            self.timeline.append(entry)
        return entry

    def note(self, text: str) -> TimelineEntry:
        """Mark an event (``green starts failing``) as a segment with the same phase and weight."""
        return self.set_phase(self.timeline[-1].phase, note=text)

    def set_colours(self, colours: Mapping[str, str]) -> None:
        """Which colour each ``X-App-Version`` means (roles alternate after a promotion)."""
        self._colours = dict(colours)

    def stop(self) -> None:
        """Stop sending; :meth:`run` returns once in-flight requests are answered."""
        self._stop = True

    def progress(self) -> Progress:
        """Counts so far."""
        current = self.timeline[-1]
        return Progress(
            elapsed=self.now(),
            sent=self._sent,
            answered=len(self.records),
            failed=self._failed,
            in_flight=self._in_flight,
            phase=current.phase,
            green_weight=current.green_weight,
        )

    def accounting(self) -> Accounting:
        """Every request so far, counted per segment and colour."""
        return account(self.records, self.timeline)

    # ------------------------------------------------------------------ the load

    async def run(self, duration: float | None = None) -> Accounting:
        """Send until :meth:`stop`, ``duration`` seconds or ``max_requests``; then account."""
        if self._t0 is not None:
            raise RuntimeError("a LoadGenerator runs once; make a new one")
        cfg = self.config
        interval = 1.0 / cfg.rate
        slots = asyncio.Semaphore(cfg.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=cfg.connections, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=cfg.request_timeout)
        async with aiohttp.ClientSession(
            base_url=cfg.base_url.rstrip("/") + "/",
            connector=connector,
            timeout=timeout,
            headers=dict(cfg.headers),
            raise_for_status=False,
        ) as session:
            self._t0 = self._clock()
            due = self._t0
            try:
                while not self._stop:
                    now = self._clock()
                    if duration is not None and now - self._t0 >= duration:
                        break
                    if cfg.max_requests is not None and self._sent >= cfg.max_requests:
                        break
                    if due > now:
                        await asyncio.sleep(due - now)
                        continue  # re-check stop and duration after the wait
                    if now - due > _STALL_RESET:
                        self.stalls += 1
                        due = now
                    await slots.acquire()
                    task = asyncio.create_task(self._one(session, slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    self._sent += 1
                    due += interval
            finally:
                if tasks:
                    # Every request has its own timeout; these are answered or failed soon.
                    await asyncio.wait(set(tasks), timeout=cfg.request_timeout + 2)
                    left = list(tasks)
                    for task in left:
                        task.cancel()
                    await asyncio.gather(*left, return_exceptions=True)
        return self.accounting()

    def _request(self) -> tuple[str, str, str, dict[str, Any] | None]:
        op = self.config.mix.pick(self._rng.random())
        if op != "create" and self._max_id < 1:
            op = "create"  # nothing to read or update yet
        if op == "get":
            return op, "GET", f"orders/{self._rng.randint(1, self._max_id)}", None
        if op == "update":
            path = f"orders/{self._rng.randint(1, self._max_id)}"
            return op, "PATCH", path, {"status": self._rng.choice(STATUSES)}
        body = {
            "customer": f"load-{self._sent}",
            "amount": round(self._rng.uniform(1, 500), 2),
            "status": "pending",
        }
        return op, "POST", "orders", body

    async def _one(self, session: aiohttp.ClientSession, slots: asyncio.Semaphore) -> None:
        op, method, path, body = self._request()
        segment = len(self.timeline) - 1
        t0 = self._t0 or 0.0
        started = self._clock()
        self._in_flight += 1
        status: int | None = None
        error: str | None = None
        colour = UNKNOWN_COLOUR
        try:
            async with session.request(method, path, json=body) as response:
                payload = await response.read()
                status = response.status
                version = response.headers.get(VERSION_HEADER)
                if version:
                    colour = self._colours.get(version, version)
                if op == "create" and status == 201:
                    self._learn_id(payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = _error_kind(exc)
        except asyncio.CancelledError:
            # Cut off at the end of the run (or Ctrl-C): still a request the client lost.
            self._record(op, method, started - t0, started, None, "cancelled", colour, segment)
            raise
        finally:
            self._in_flight -= 1
            slots.release()
        self._record(op, method, started - t0, started, status, error, colour, segment)

    def _record(
        self,
        op: str,
        method: str,
        start: float,
        started: float,
        status: int | None,
        error: str | None,
        colour: str,
        segment: int,
    ) -> None:
        record = RequestRecord(
            start=start,
            latency=self._clock() - started,
            operation=op,
            method=method,
            idempotent=method in _IDEMPOTENT,
            status=status,
            error=error,
            colour=colour,
            segment=segment,
        )
        self.records.append(record)
        if record.failed:
            self._failed += 1

    def _learn_id(self, payload: bytes) -> None:
        try:
            order_id = json.loads(payload)["id"]
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(order_id, int) and order_id > self._max_id:
            self._max_id = order_id
