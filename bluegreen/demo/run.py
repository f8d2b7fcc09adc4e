"""``bluegreen demo``: the seed's rollout on one machine, under load, measured end to end.

Theory of operation
-------------------
1. **Database.** ``DATABASE_URL`` (the demo creates and later drops a database
   of its own on that server) or an embedded PostgreSQL
   (:mod:`bluegreen.demo.database`). Migration 0001 (the orders table as v1
   knows it) runs first and ``rows`` orders are seeded, so the backfill of the
   rollout has real work.
2. **Processes**, all owned by one :class:`~bluegreen.demo.processes.Supervisor`
   and stopped newest first on every way out (normal end, error, Ctrl-C,
   SIGTERM): blue runs the app's v1, green its v2 (whose ``/health`` is 503
   until the rollout's migrations have run), and ``bluegreen serve`` with the
   config of :mod:`bluegreen.demo.config`, its own state file and a generated
   admin token, in a temporary directory.
3. **Load.** :class:`~bluegreen.demo.load.LoadGenerator`, open loop at
   ``rate`` requests/s through the proxy, every request recorded.
4. **Rollout.** ``POST /api/v1/rollout {"version": "v2"}``: the controller
   inside ``serve`` runs preflight, expand + migrate, smoke tests, 10 → 50 →
   100 % and, after the grace period, the contract. The demo follows
   ``/api/v1/events`` (server-sent events): every stored change of the
   weights or the rollout record arrives the moment it is written, and moves
   the load's timeline (:meth:`~bluegreen.demo.load.LoadGenerator.set_phase`).
   The proxy applies the same change from the same store notification, so
   the timeline and the traffic agree within milliseconds.
5. **Variants.** When green's weight first reaches 50 %, ``--break green``
   makes green answer 500 to every second request (the app's failure
   injection, on green's own port), and ``--kill green`` SIGKILLs green's
   process half a second into the 50 % bake, while requests are in flight.
6. **End.** Rolled back or aborted, or promoted and the contract finished;
   ``tail`` more seconds of load show the state after it; then the report:
   every request from the records, the migration durations and the fallback
   times from the final rollout record. What each run expects and which
   failures it may cost is :mod:`bluegreen.demo.variants`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from bluegreen.demo import MIGRATIONS_DIR
from bluegreen.demo.app import RunningApp, seed_orders, set_failures, start_app
from bluegreen.demo.config import DemoServeSettings, write_serve_config
from bluegreen.demo.database import DemoDatabase, demo_database
from bluegreen.demo.load import LoadConfig, LoadGenerator, Mix
from bluegreen.demo.processes import ManagedProcess, Supervisor, free_port, python_argv
from bluegreen.demo.report import DemoReport, MigrationTiming, report_to_dict
from bluegreen.demo.variants import Action, FailureWindow, Variant, allowed_failures
from bluegreen.errors import DemoError, DemoProcessError, UsageError
from bluegreen.migrations import runner
from bluegreen.migrations.runner import RunOptions, safe_url

TARGET_VERSION: Final = "v2"
CONTRACT_RETRIES: Final = 5
CONTRACT_RETRY_DELAY: Final = 0.3  # seconds: longer than a heartbeat round trip
KILL_DELAY: Final = 0.5  # seconds into the 50 % bake: green has requests in flight by then
FINISHED: Final = frozenset({"rolled_back", "aborted"})
CONTRACT_FINISHED: Final = frozenset({"done", "failed", "refused"})
ACTIVE: Final = frozenset({"ramp", "bake"})
_LISTENING: Final = re.compile(r'^\{.*"event": "proxy_listening".*\}$')
_PORT_TAKEN: Final = re.compile(r"address already in use|errno 98", re.IGNORECASE)
_PROXY_ATTEMPTS: Final = 3
_NO_TRAFFIC_LIMIT: Final = 15.0  # seconds without one answered request through the proxy


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``bluegreen demo`` was asked to do (the command line, checked)."""

    variant: Variant = field(default_factory=Variant)
    rate: float = 200.0  # requests per second through the proxy
    rows: int = 50_000  # orders seeded before the rollout (the backfill's work)
    bake: float = 5.0  # seconds per ramp step
    grace: float = 3.0  # contract grace, seconds
    baseline: float = 2.0  # seconds of load on blue alone before the rollout starts
    tail: float = 2.0  # seconds of load after the rollout ended
    database_url: str | None = None  # None: DATABASE_URL, else an embedded server
    keep: bool = False  # keep the work directory (logs, config, state) and the database
    timeout: float | None = None  # seconds for the rollout; None: from bake and grace
    seed: int = 7  # the load's sequence of operations

    def __post_init__(self) -> None:
        checks = (
            ("--rate", self.rate, 1.0, 5000.0),
            ("--rows", self.rows, 0, 10_000_000),
            ("--bake", self.bake, 0.0, 3600.0),
            ("--grace", self.grace, 0.0, 86_400.0),
            ("--timeout", self.timeout if self.timeout is not None else 1.0, 1.0, 86_400.0),
        )
        for flag, value, low, high in checks:
            if not low <= value <= high:
                raise UsageError(f"{flag} must be {_num(low)}..{_num(high)}, got {_num(value)}")

    @property
    def rollout_timeout(self) -> float:
        """How long the rollout may take before the demo aborts it."""
        if self.timeout is not None:
            return self.timeout
        return 3 * self.bake + self.grace + 90.0 + self.rows / 10_000  # backfill: ~100 s/1M


@dataclass(frozen=True, slots=True)
class RunningProxy:
    """A ``bluegreen serve`` child: its process, proxy URL, admin URL and config file."""

    process: ManagedProcess
    url: str
    admin_url: str
    config_path: Path


@dataclass(frozen=True, slots=True)
class DemoResult:
    """The report and where the run's files are (None once removed)."""

    report: DemoReport
    extra: Mapping[str, Any]  # added to the JSON form: rollout, database, files
    work_dir: Path | None

    def to_dict(self) -> dict[str, Any]:
        """The report as one JSON-ready object (``outcome``, ``requests``, ...)."""
        return {**report_to_dict(self.report), **self.extra}


Say = Callable[[str], None]


# =========================================================================== the proxy


async def start_proxy(
    supervisor: Supervisor,
    config_dir: Path,
    settings_for: Callable[[int], DemoServeSettings],
    env: Mapping[str, str],
    *,
    name: str = "proxy",
    within: float = 30.0,
) -> RunningProxy:
    """Start ``bluegreen serve`` on a free port; return once it serves and its admin API answers.

    ``settings_for(port)`` gives the config for a proxy port. The port is
    picked free just before, so another process may take it first: then the
    next port is tried (three times in all).
    """
    for attempt in range(_PROXY_ATTEMPTS):
        settings = settings_for(free_port())
        path = write_serve_config(config_dir / f"{name}.yaml", settings)
        process = supervisor.start(
            name,
            python_argv("bluegreen", "serve", "--config", str(path)),
            env=env,
            stop_timeout=settings.drain + 5.0,
        )
        try:
            line = await process.wait_output(_LISTENING, within=within)
        except DemoProcessError:
            if process.running or attempt == _PROXY_ATTEMPTS - 1:
                raise
            if not _PORT_TAKEN.search(process.tail()):
                raise
            continue
        info = json.loads(line.group(0))
        return RunningProxy(process, f"http://{info['address']}", str(info["admin"]), path)
    raise AssertionError("unreachable")  # pragma: no cover


# =========================================================================== following the rollout


StateCallback = Callable[[int, Mapping[str, Any] | None], None]


class RolloutFollower:
    """Follows ``/api/v1/events``: green's stored weight and the rollout record as they change.

    Each event updates :attr:`green_bp` and :attr:`record` and calls
    ``on_change``. A dropped stream is reopened (a fresh snapshot); after
    ``max_failures`` failed attempts in a row :meth:`run` raises.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        admin_url: str,
        on_change: StateCallback,
        *,
        max_failures: int = 20,
    ) -> None:
        self.session = session
        self.url = f"{admin_url.rstrip('/')}/api/v1/events"
        self.on_change = on_change
        self.max_failures = max_failures
        self.green_bp = 0
        self.record: Mapping[str, Any] | None = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Read events until cancelled."""
        failures = 0
        last = ""
        while True:
            try:
                await self._stream()
                last = "the stream ended"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            failures += 1
            if failures >= self.max_failures:
                raise DemoError(f"lost the admin API's event stream at {self.url}: {last}")
            await asyncio.sleep(0.2)

    async def _stream(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
        async with self.session.get(self.url, timeout=timeout) as response:
            response.raise_for_status()
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk.replace(b"\r\n", b"\n")
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    self._block(block.decode("utf-8", "replace"))

    def _block(self, block: str) -> None:
        event = "message"
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if not data:
            return
        payload = json.loads("\n".join(data))
        if not isinstance(payload, dict):
            return
        if event == "snapshot":
            self.green_bp = int(payload.get("green_weight_bp", self.green_bp))
            self.record = payload.get("rollout")
        else:
            changes = payload.get("changes") or {}
            if "weights" in changes:
                self.green_bp = int(changes["weights"]["green_bp"])
            if "rollout" in changes:
                self.record = changes["rollout"]
        self.connected.set()
        self.on_change(self.green_bp, self.record)


# =========================================================================== one run


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


class _Run:
    """One demo run once every process is up: load, rollout, variant, outcome."""

    def __init__(
        self,
        options: DemoOptions,
        say: Say,
        *,
        proxy: RunningProxy,
        blue: RunningApp,
        green: RunningApp,
        token: str,
        session: aiohttp.ClientSession,
    ) -> None:
        self.options = options
        self.variant = options.variant
        self.say = say
        self.proxy = proxy
        self.blue = blue
        self.green = green
        self.token = token
        self.session = session
        self.load = LoadGenerator(
            LoadConfig(
                base_url=proxy.url, rate=options.rate, known_ids=options.rows, seed=options.seed
            ),
            phase="baseline",
        )
        self.follower = RolloutFollower(session, proxy.admin_url, self._on_change)
        self.rollout_id: int | None = None
        self.finished = asyncio.Event()
        self.final_phase: str | None = None
        self.struck_wall: float | None = None
        self.struck_load: float | None = None
        self._last: tuple[str, float] = ("baseline", 0.0)
        self._contract: str | None = None
        self.contract_retries = 0
        self._struck = False
        self._retrying = False
        self._tasks: list[asyncio.Task[Any]] = []

    # ----------------------------------------------------------------- reacting to changes

    def _on_change(self, green_bp: int, record: Mapping[str, Any] | None) -> None:
        ours = record is not None and record.get("id") == self.rollout_id
        phase = str(record["phase"]) if record is not None and ours else "baseline"
        weight = green_bp / 100
        contract = str(record.get("contract", "")) if record is not None and ours else ""
        note = ""
        if phase == "promoted" and contract != self._contract:
            self._contract = contract
            note = f"contract {contract.replace('_', ' ')}"
        if self._strikes_now(phase, green_bp):
            # Marked in the same timeline entry as the weight that triggered it.
            note = self._strike()
        if (phase, weight) != self._last:
            self._last = (phase, weight)
            self.load.set_phase(phase, weight, note=note)
            self._progress(f"{phase:<12} green {weight:>3g} %")
        elif note:
            self.load.note(note)
        if note:
            self._progress(note)
        if record is None or not ours:
            return
        if contract == "refused":
            self._contract_refused(record)
        if self._strikes_later(phase, green_bp):
            self._struck = True
            self._tasks.append(asyncio.create_task(self._strike_later(), name="demo variant"))
        if phase in FINISHED or (
            phase == "promoted" and contract in CONTRACT_FINISHED and not self._retrying
        ):
            self.final_phase = phase
            self.finished.set()

    def _contract_refused(self, record: Mapping[str, Any]) -> None:
        """Ask again when the refusal only means a heartbeat had not caught up yet.

        The runner checks that every replica has applied the newest state
        version, and that version is the contract's own start: a replica
        whose heartbeat has not reported it yet reads as "not drained". An
        operator would simply ask again (``bluegreen rollout contract``); so
        does the demo, at most ``CONTRACT_RETRIES`` times, and says so.
        """
        log = record.get("log") or ()
        message = str(log[-1].get("message", "")) if log else ""
        self._retrying = (
            "has not applied version" in message and self.contract_retries < CONTRACT_RETRIES
        )
        if self._retrying:
            self.contract_retries += 1
            self._tasks.append(
                asyncio.create_task(self._request_contract(), name="demo contract retry")
            )

    async def _request_contract(self) -> None:
        await asyncio.sleep(CONTRACT_RETRY_DELAY)
        self._progress("contract requested again")
        self._retrying = False
        try:
            await self._admin("POST", "/api/v1/rollout/contract")
        except (DemoError, aiohttp.ClientError, TimeoutError) as exc:
            self.say(f"could not request the contract again: {exc}")
            self.final_phase = "promoted"
            self.finished.set()

    def _progress(self, text: str) -> None:
        p = self.load.progress()
        self.say(f"{p.elapsed:6.1f}s  {text:<30} {p.answered:>7,} answered, {p.failed:,} failed")

    def _reached(self, green_bp: int) -> bool:
        return green_bp >= round(self.variant.at_percent * 100)

    def _strikes_now(self, phase: str, green_bp: int) -> bool:
        """``--break``: the moment green's weight reaches 50 %."""
        return (
            not self._struck
            and self.variant.action is Action.BREAK
            and phase in ACTIVE
            and self._reached(green_bp)
        )

    def _strikes_later(self, phase: str, green_bp: int) -> bool:
        """``--kill``: once the 50 % step is baking (then ``KILL_DELAY`` later)."""
        return (
            not self._struck
            and self.variant.action is Action.KILL
            and phase == "bake"
            and self._reached(green_bp)
        )

    def _mark_struck(self) -> None:
        # Taken before acting: the times measured from here are never too short.
        self._struck = True
        self.struck_wall = time.time()
        self.struck_load = self.load.now()

    def _strike(self) -> str:
        """Make green fail now (the request goes out at once); the timeline note."""
        v = self.variant
        self._mark_struck()
        self._tasks.append(asyncio.create_task(self._break_green(), name="demo variant"))
        return f"{v.colour} starts failing ({v.break_ratio:.0%} of requests answer 500)"

    async def _break_green(self) -> None:
        v = self.variant
        await set_failures(self.green.url, v.break_ratio, session=self.session)
        self._progress(f"{v.colour} answers 500 to {v.break_ratio:.0%} of requests")

    async def _strike_later(self) -> None:
        await asyncio.sleep(KILL_DELAY)
        if self._last[0] not in ACTIVE:
            self.say("the rollout moved on before green could be killed")
            return
        v = self.variant
        self._mark_struck()
        self.load.note(f"{v.colour}'s process killed (SIGKILL)")
        self.green.process.kill()
        self._progress(f"{v.colour} killed (SIGKILL, pid {self.green.process.pid})")

    # ----------------------------------------------------------------- waiting

    async def _until(self, done: Callable[[], Awaitable[Any]], seconds: float) -> bool:
        """Await ``done()`` for up to ``seconds``; a failed helper task (or child) raises.

        Helper tasks started meanwhile (the variant, a contract request) are
        watched too: their failure ends the run instead of going unnoticed.
        """
        waiter = asyncio.ensure_future(done())
        deadline = time.monotonic() + seconds
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                watched = {waiter, *(t for t in self._tasks if not t.done())}
                await asyncio.wait(
                    watched, timeout=min(left, 0.2), return_when=asyncio.FIRST_COMPLETED
                )
                for task in self._tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]  # not None, checked
                if waiter.done():
                    return True
                self._check_children()
        finally:
            waiter.cancel()

    def _check_children(self) -> None:
        for process in (self.proxy.process, self.blue.process, self.green.process):
            if not process.running and not process.killed:
                raise process.exited_error("the rollout to finish")

    async def _sleep(self, seconds: float) -> None:
        await self._until(asyncio.Event().wait, seconds)

    # ----------------------------------------------------------------- the run

    async def drive(self) -> tuple[str, dict[str, Any] | None]:
        """Load, start the rollout, follow it; the outcome and the final rollout view."""
        opts = self.options
        cap = opts.baseline + opts.rollout_timeout + opts.tail + 60.0
        load_task = asyncio.create_task(self.load.run(duration=cap), name="demo load")
        follow_task = asyncio.create_task(self.follower.run(), name="demo events")
        self._tasks += [load_task, follow_task]
        outcome = "failed"
        try:
            if not await self._until(self.follower.connected.wait, 15):
                raise DemoError(f"no event stream from the admin API at {self.proxy.admin_url}")
            await self._baseline()
            started = await self._admin("POST", "/api/v1/rollout", {"version": TARGET_VERSION})
            self.rollout_id = int(started["id"])
            self._progress(f"rollout {self.rollout_id} of {TARGET_VERSION} started")
            # The stream may have delivered the start (and more) before its id was known.
            self._on_change(self.follower.green_bp, self.follower.record)
            if await self._until(self.finished.wait, opts.rollout_timeout):
                outcome = self._outcome()
            else:
                outcome = "timeout"
                self.say(
                    f"the rollout did not finish within {opts.rollout_timeout:g}s; aborting it"
                )
                with contextlib.suppress(DemoError, aiohttp.ClientError, TimeoutError):
                    await self._admin("POST", "/api/v1/rollout/abort", {"reason": "demo timeout"})
                await self._until(self.finished.wait, 15)
            await self._sleep(opts.tail)
        finally:
            self.load.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(load_task), 15)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        view = None
        with contextlib.suppress(DemoError, aiohttp.ClientError, TimeoutError):
            view = await self._admin("GET", "/api/v1/rollout")
        return outcome, view

    async def _baseline(self) -> None:
        """Blue alone for ``baseline`` seconds, and at least one answered request."""
        started = time.monotonic()
        await self._sleep(self.options.baseline)
        while self.load.progress().answered - self.load.progress().failed < 1:
            if time.monotonic() - started > _NO_TRAFFIC_LIMIT:
                raise DemoError(
                    f"no request through the proxy at {self.proxy.url} succeeded in "
                    f"{_NO_TRAFFIC_LIMIT:g}s; see {self.proxy.process.log_path}"
                )
            await self._sleep(0.1)

    def _outcome(self) -> str:
        phase = self.final_phase or "failed"
        if phase == "promoted" and self._contract in ("failed", "refused"):
            return f"contract_{self._contract}"
        return phase

    async def _admin(self, method: str, path: str, body: object | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(
            method,
            f"{self.proxy.admin_url}{path}",
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=15),
        ) as response:
            answer = await response.json(content_type=None)
            if response.status >= 300:
                raise DemoError(
                    f"{method} {path} answered {response.status}: "
                    f"{answer.get('error') if isinstance(answer, dict) else answer}"
                )
            if not isinstance(answer, dict):
                raise DemoError(f"{method} {path} answered {answer!r}, not a JSON object")
            return answer


# =========================================================================== the report


def _migrations(record: Mapping[str, Any] | None, setup_seconds: float) -> list[MigrationTiming]:
    timings = [MigrationTiming("0001_create_orders", "expand", setup_seconds, "before the rollout")]
    results = (record or {}).get("results") or {}
    for key, outcome in (
        ("migrations", "applied"),
        ("contract", "applied"),
        ("down_migrations", "reverted"),
    ):
        for m in results.get(key) or ():
            timings.append(
                MigrationTiming(
                    str(m.get("name")), str(m.get("phase")), float(m["duration_seconds"]), outcome
                )
            )
    return timings


def build_report(
    run: _Run, outcome: str, view: Mapping[str, Any] | None, setup_seconds: float
) -> tuple[DemoReport, dict[str, Any]]:
    """The report of a finished run, and what the JSON form adds to it."""
    accounting = run.load.accounting()
    record: Mapping[str, Any] | None = (view or {}).get("rollout")
    variant = run.variant
    fallback = (record or {}).get("fallback") or {}
    failure = (record or {}).get("failure") or {}
    detection = fallback_s = None
    zero_load = None
    struck_wall, struck_load = run.struck_wall, run.struck_load
    if struck_wall is not None and struck_load is not None:
        if fallback.get("detected_at") is not None:
            detection = float(fallback["detected_at"]) - struck_wall
        if fallback.get("weights_zero_at") is not None:
            fallback_s = float(fallback["weights_zero_at"]) - struck_wall
            zero_load = struck_load + fallback_s
    window = FailureWindow(struck_load, zero_load)
    allowed = allowed_failures(run.load.records, variant, window)
    notes = [f"expected: {variant.expected_outcome}; {variant.rule}"]
    if variant.action is Action.BREAK and accounting.failed_requests:
        notes.append(
            f"green's 500s to non-idempotent requests reach clients until the fallback; "
            f"idempotent ones are retried on blue ({accounting.total.failed_idempotent} "
            f"idempotent, {accounting.total.failed_non_idempotent} non-idempotent failed here)"
        )
    if variant.action is Action.KILL:
        notes.append(
            "requests sent to dead green after the kill found its port closed and were "
            "retried on blue by the proxy"
        )
    if fallback.get("failing_since") is not None and fallback.get("detected_at") is not None:
        recorded = float(fallback["detected_at"]) - float(fallback["failing_since"])
        notes.append(
            f"the controller's own record: first failing analysis window {_ms(recorded)} before "
            f"the decision ({failure.get('code', '?')})"
        )
    if run.contract_retries:
        notes.append(
            f"the contract was refused {run.contract_retries} time(s) because the replica's "
            "heartbeat had not yet reported the contract's own state version; the demo asked "
            "again, as `bluegreen rollout contract` would"
        )
    if run.load.stalls:
        notes.append(f"the load generator fell behind its schedule {run.load.stalls} time(s)")
    report = DemoReport(
        outcome=outcome,
        accounting=accounting,
        migrations=tuple(_migrations(record, setup_seconds)),
        detection_seconds=detection,
        fallback_seconds=fallback_s,
        reason=str(failure["message"]) if failure.get("message") else None,
        variant=variant.name,
        notes=tuple(notes),
        expected_outcome=variant.expected_outcome,
        allowed_failures=allowed,
    )
    extra: dict[str, Any] = {
        "expected_outcome": variant.expected_outcome,
        "allowed_failures": allowed,
        "rule": variant.rule,
        "struck_at_seconds": None if struck_load is None else round(struck_load, 3),
        "rollout": None
        if view is None
        else {
            "id": (record or {}).get("id"),
            "version": (record or {}).get("version"),
            "phase": view.get("phase"),
            "summary": view.get("summary"),
            "contract": (record or {}).get("contract"),
            "failure": failure or None,
            "fallback": fallback or None,
            "log": [e.get("message") for e in (record or {}).get("log") or ()],
        },
    }
    return report, extra


# =========================================================================== entry point


def _mix_text() -> str:
    mix = Mix()
    return f"{mix.get:.0%} GET, {mix.create:.0%} POST, {mix.update:.0%} PATCH"


async def _prepare_database(db: DemoDatabase, rows: int, say: Say) -> float:
    """Migration 0001 and the seeded orders; returns the migration's duration."""
    started = time.monotonic()
    await runner.apply(db.url, MIGRATIONS_DIR, to=1, options=RunOptions(lock_timeout=5.0))
    seconds = time.monotonic() - started
    seeded = await seed_orders(db.url, rows)
    say(f"  orders table (migration 0001) and {seeded:,} orders written the v1 way")
    return seconds


async def run_demo(options: DemoOptions, say: Say) -> DemoResult:
    """Run the demo; the report. Everything started is stopped on the way out."""
    work_dir = Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
    try:
        result = await _run_in(work_dir, options, say)
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: the user knows why it stopped
        _leave(work_dir, keep=options.keep, say=say)
        raise
    except BaseException:
        _leave(work_dir, keep=True, say=say)
        raise
    if _leave(work_dir, keep=options.keep or not result.report.ok, say=say):
        return result
    return DemoResult(result.report, {**result.extra, "work_dir": None}, None)


def _leave(work_dir: Path, *, keep: bool, say: Say) -> bool:
    """Keep the work directory (saying where) or remove it; whether it was kept.

    An empty one (the demo stopped before starting anything) is always removed.
    """
    if keep and any(work_dir.iterdir()):
        say(f"logs, config and state kept in {work_dir}")
        return True
    shutil.rmtree(work_dir, ignore_errors=True)
    return False


async def _run_in(work_dir: Path, options: DemoOptions, say: Say) -> DemoResult:
    say("bluegreen demo: v1 (blue) -> v2 (green) under load, with the seed's migrations")
    if not options.database_url:
        say("  no DATABASE_URL: starting an embedded PostgreSQL")
    async with demo_database(database_url=options.database_url, keep=options.keep) as db:
        where = "embedded PostgreSQL" if db.source == "embedded" else "DATABASE_URL"
        say(f"  database {safe_url(db.url)} ({where})")
        setup_seconds = await _prepare_database(db, options.rows, say)
        async with Supervisor(work_dir) as supervisor:
            blue, green = await asyncio.gather(
                start_app(supervisor, "blue", "v1", db.url),
                start_app(supervisor, "green", "v2", db.url),
            )
            await blue.process.wait_http(f"{blue.url}/health")
            say(f"  blue  v1 {blue.url} (pid {blue.process.pid})")
            say(f"  green v2 {green.url} (pid {green.process.pid}; /health 503 until migrated)")
            token = secrets.token_hex(24)

            def settings_for(port: int) -> DemoServeSettings:
                return DemoServeSettings(
                    proxy_port=port,
                    blue=blue.url.removeprefix("http://"),
                    green=green.url.removeprefix("http://"),
                    state_url=f"file:{work_dir / 'state.json'}",
                    bake=options.bake,
                    contract_grace=options.grace,
                    access_log=work_dir / "access.log",
                )

            env = {"BLUEGREEN_ADMIN_TOKEN": token, "DATABASE_URL": db.url}
            proxy = await start_proxy(supervisor, work_dir, settings_for, env)
            say(f"  proxy {proxy.url} (pid {proxy.process.pid}), admin API {proxy.admin_url}")
            say(f"  load  {options.rate:g} requests/s through the proxy: {_mix_text()}")
            async with aiohttp.ClientSession() as session:
                run = _Run(
                    options, say, proxy=proxy, blue=blue, green=green, token=token, session=session
                )
                outcome, view = await run.drive()
            report, extra = build_report(run, outcome, view, setup_seconds)
            extra["database"] = db.to_dict()
            extra["work_dir"] = str(work_dir)
    return DemoResult(report, extra, work_dir)
