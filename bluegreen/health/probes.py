"""Active health probes: one GET per server of each colour, every interval.

The I/O shell around the pure :mod:`bluegreen.health.probe_state`: a
:class:`HealthProber` runs one task per server, sends the configured request
through one shared aiohttp session (bounded connection pool), and feeds each
result into the server's :class:`~bluegreen.health.probe_state.ServerProbe`.
A server's health only flips after ``healthy_threshold`` /
``unhealthy_threshold`` agreeing results; every flip is logged
(``probe_health_changed``) and passed to subscribers, so the runner can tell
health analysis, ``/readyz`` can answer and the ``upstream up`` gauge can move.

Timing: each server's probes are scheduled on monotonic deadlines
(``start + jitter + n * interval``), so they never drift however long a probe
takes; a slot missed while the event loop was stalled is skipped, not
bunched. The first probe of each server is jittered so many servers are not
probed in lockstep. A probe's timeout is at most its interval (the config
enforces it), so probes of one server never overlap.

:func:`probe_once` is a single probe, also used by preflight.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp
import structlog

from bluegreen import __version__
from bluegreen.health.probe_state import ColourProbes, ProbeChange, ProbeSummary, ServerProbe
from bluegreen.rollout_config import ProbeConfig
from bluegreen.routing import Colour

log = structlog.get_logger("bluegreen.probes")

USER_AGENT: Final = f"bluegreen-probe/{__version__}"
MAX_PROBE_BODY: Final = 64 * 1024  # read (and drop) at most this much, so the connection is reused
NOT_IMPLEMENTED_STATUSES: Final = frozenset({404, 405, 501})

ChangeCallback = Callable[[Colour, ProbeChange], None]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's answer. ``implemented`` is False when the path does not exist (404/405/501)."""

    ok: bool
    detail: str
    seconds: float
    status: int | None = None

    @property
    def implemented(self) -> bool:
        """Whether the server has the probe path at all (it answered, and not 404/405/501)."""
        return self.status is not None and self.status not in NOT_IMPLEMENTED_STATUSES


@dataclass(frozen=True, slots=True)
class ServerHealthView:
    """One server's probe state, for ``/readyz``, metrics and status output."""

    colour: Colour
    server: str
    healthy: bool
    checked: bool
    detail: str
    changed_at: float | None  # wall-clock seconds of the last flip


def probe_session(config: ProbeConfig) -> aiohttp.ClientSession:
    """A session sized for probing (``max_connections``), with the probe's User-Agent."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.max_connections),
        headers={"User-Agent": USER_AGENT},
    )


def describe_client_error(exc: BaseException, server: str) -> str:
    """One short sentence for an HTTP client failure (aiohttp, OSError, timeout)."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {server}: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the answer's body was cut short ({exc})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid HTTP answer ({exc.message})"
    if isinstance(exc, OSError):
        return f"network error talking to {server}: {_os_reason(exc)}"
    return f"request to {server} failed ({type(exc).__name__}: {exc})"


def _os_reason(exc: OSError | None) -> str:
    # asyncio words ECONNREFUSED as "Connect call failed (...)": use the errno's text.
    if exc is not None and exc.errno is not None and exc.errno in errno.errorcode:
        return os.strerror(exc.errno).lower()
    if exc is not None and exc.strerror:
        return exc.strerror.lower()
    return str(exc).lower() if exc is not None else "unknown error"


async def probe_once(
    session: aiohttp.ClientSession, server: str, config: ProbeConfig
) -> ProbeResult:
    """Send one probe to ``server`` (``host:port``); never raises for a failed probe."""
    url = f"http://{server}{config.path}"
    start = time.monotonic()
    try:
        async with session.request(
            config.method,
            url,
            headers=dict(config.headers),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=config.timeout),
        ) as response:
            await _discard_body(response.content)
            status = response.status
    except TimeoutError:
        return ProbeResult(
            False, f"no answer within {config.timeout:g} s", time.monotonic() - start
        )
    except (aiohttp.ClientError, OSError) as exc:
        return ProbeResult(False, describe_client_error(exc, server), time.monotonic() - start)
    seconds = time.monotonic() - start
    took = f"{seconds * 1000:.0f} ms"
    if status in config.expected_status:
        return ProbeResult(True, f"{status} in {took}", seconds, status)
    if status in NOT_IMPLEMENTED_STATUSES:
        detail = f"{status} for {config.method} {config.path}: no health endpoint there"
    else:
        detail = f"{status} in {took} (expected {config.expected_status})"
    return ProbeResult(False, detail, seconds, status)


async def _discard_body(content: aiohttp.StreamReader) -> None:
    read = 0
    while read < MAX_PROBE_BODY:
        chunk = await content.read(16384)
        if not chunk:
            return
        read += len(chunk)


class HealthProber:
    """Probes every server of both colours until stopped; exposes their health.

    ``servers`` maps each colour to its ``host:port`` servers. ``on_change``
    (and :meth:`subscribe` callbacks) run in the event loop on every flip.
    ``session``: a shared aiohttp session (else one is made, sized by
    ``max_connections``, and closed by :meth:`stop`). ``clock`` gives
    wall-clock seconds for the records; ``rand`` in [0, 1) draws the jitter.
    """

    def __init__(
        self,
        servers: Mapping[Colour, Sequence[str]],
        config: ProbeConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        on_change: ChangeCallback | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._colours = {
            colour: ColourProbes.new(colour, servers.get(colour, ()), config.thresholds)
            for colour in Colour
        }
        self._session = session
        self._own_session = session is None
        self._callbacks: list[ChangeCallback] = [on_change] if on_change is not None else []
        self._clock = clock
        self._rand = rand
        self._tasks: list[asyncio.Task[None]] = []
        self._observed = asyncio.Event()
        self._counts: dict[tuple[Colour, str], int] = {}

    # ----------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` (and probes are enabled)."""
        return bool(self._tasks)

    async def start(self) -> None:
        """Start one probing task per server (no-op when probes are disabled or running)."""
        if self._tasks or not self.config.enabled:
            return
        if self._session is None:
            self._session = probe_session(self.config)
        jitter = self.config.first_probe_jitter
        spread = self.config.interval if jitter is None else jitter
        for colour, probes in self._colours.items():
            for probe in probes.servers:
                delay = self._rand() * spread
                task = asyncio.create_task(
                    self._run(colour, probe.server, delay), name=f"probe {colour} {probe.server}"
                )
                self._tasks.append(task)
        log.info(
            "probes_started",
            servers=sum(len(p.servers) for p in self._colours.values()),
            path=self.config.path,
            interval=self.config.interval,
        )

    async def stop(self) -> None:
        """Stop probing and close the session this prober made."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HealthProber:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- reading

    def colour(self, colour: Colour) -> ColourProbes:
        """The probe state of every server of ``colour``."""
        return self._colours[colour]

    def summary(self, colour: Colour) -> ProbeSummary | None:
        """Counts for :func:`~bluegreen.health.analysis.assess` (None when probes are off).

        Servers not probed yet are not counted as unhealthy: nothing is known
        about them, and analysis must not fail a colour in its first interval.
        """
        if not self.config.enabled:
            return None
        servers = self._colours[colour].servers
        unhealthy = sum(1 for p in servers if p.checked and not p.healthy)
        return ProbeSummary(servers=len(servers), unhealthy=unhealthy)

    def servers(self) -> list[ServerHealthView]:
        """Every server's state, blue first, in configuration order."""
        return [
            ServerHealthView(colour, p.server, p.healthy, p.checked, p.detail, p.changed_at)
            for colour, probes in self._colours.items()
            for p in probes.servers
        ]

    def all_checked(self, colour: Colour | None = None) -> bool:
        """Whether every server (of ``colour``, or of both) has been probed at least once."""
        colours = [colour] if colour is not None else list(Colour)
        return all(p.checked for c in colours for p in self._colours[c].servers)

    def probes_sent(self, colour: Colour, server: str) -> int:
        """How many probes ``server`` has answered (or failed) so far."""
        return self._counts.get((colour, server), 0)

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(colour, change)`` on every flip; returns unsubscribe."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    async def wait_until(
        self,
        predicate: Callable[[HealthProber], bool],
        timeout: float,  # noqa: ASYNC109  # a deadline over many observations
    ) -> bool:
        """Wait until ``predicate(self)`` holds after some probe result; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._observed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._observed.wait(), remaining)
        return True

    # ----------------------------------------------------------------- probing

    async def _run(self, colour: Colour, server: str, first_delay: float) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval
        next_at = loop.time() + first_delay
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            session = self._session
            if session is None:  # pragma: no cover  # stop() cancels us before closing it
                return
            result = await probe_once(session, server, self.config)
            self.observe(colour, server, result)
            next_at += interval
            now = loop.time()
            if next_at <= now:  # the loop stalled past a slot: skip it, stay on the grid
                next_at += math.ceil((now - next_at) / interval) * interval
                if next_at <= now:
                    next_at += interval

    def observe(self, colour: Colour, server: str, result: ProbeResult) -> ProbeChange | None:
        """Record a probe result (the probing tasks call this; tests may too)."""
        probes, change = self._colours[colour].observe(
            server, result.ok, at=self._clock(), detail=result.detail
        )
        self._colours[colour] = probes
        self._counts[(colour, server)] = self._counts.get((colour, server), 0) + 1
        if change is not None:
            log.info(
                "probe_health_changed",
                colour=colour.value,
                server=server,
                before=change.before.value,
                after=change.after.value,
                detail=change.detail,
            )
            for callback in list(self._callbacks):
                try:
                    callback(colour, change)
                except Exception:
                    log.exception("probe_callback_failed", colour=colour.value, server=server)
        self._observed.set()
        return change

    def server(self, colour: Colour, server: str) -> ServerProbe:
        """The probe state of one server (``KeyError`` if it is not configured)."""
        return self._colours[colour].get(server)
