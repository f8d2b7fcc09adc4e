"""``bluegreen serve --workers N``: one control process and N data-plane worker processes.

Theory of operation
-------------------
Python runs one thread of bytecode per process, so a proxy that should use
several cores runs several processes, as nginx does. ``serve`` with
``workers: N`` (N > 1, or ``auto``: one per usable CPU) keeps everything but
the proxy in the process the user started — the *control process*: state
store, admin API, rollout controller, health probes — and starts N lean
*workers* (:mod:`bluegreen.worker`) that only proxy.

* **Listening.** The control process binds the proxy address with
  SO_REUSEPORT but never listens on it: it only holds the port (port 0 picks
  one for every worker). Each worker binds its own listening socket to that
  address, and the kernel spreads new connections over them.
* **State.** Each worker is a replica of the state store with its own id
  (``<replica id>:w<slot>``), heartbeated by the control process: a state
  change is sent to every worker over its socket pair, and a worker's
  heartbeat carries a version only after the worker confirmed it runs it. So
  ``?wait`` (``wait_applied``) and the rollout controller's drain checks see
  every worker, each with its own requests in flight.
* **Numbers.** Workers send their counters every 250 ms (and at once when a
  colour they stopped sending to has drained); ``/metrics`` and
  ``/api/v1/stats`` report the sum over the workers, and each worker's
  heartbeat its own share (the rollout analysis adds replicas up). Counters of
  a worker that died are kept, so totals never go backwards.
* **Crashes.** A worker that exits on its own is started again (at most once a
  second per slot) with the current state; until it confirms, its replica
  reports the last version it ran.
* **Shutdown.** SIGTERM/SIGINT: the controller steps down, every worker
  drains (``timeouts.drain``), the control process exits 0 once all have
  left; a second signal cuts them (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

import structlog

from bluegreen.admin import AdminServer
from bluegreen.config import Config
from bluegreen.errors import ConfigError
from bluegreen.metrics import ColourSnapshot, ColourStats, PoolGauge, ProxyMetrics, StatsSnapshot
from bluegreen.replica import (
    ControlPlane,
    ControlPlaneCollector,
    Replica,
    _safe_replica_id,
)
from bluegreen.routing import Colour
from bluegreen.runtime import data_plane_build, freeze_startup_objects
from bluegreen.shutdown import CutAfterDrain, DrainSignals
from bluegreen.state.model import ReplicaInfo, StateDocument, to_json
from bluegreen.worker import EXIT_FAILED, WorkerInit, WorkerStats, encode, read_message

if TYPE_CHECKING:
    from bluegreen.admin import Route

log = structlog.get_logger("bluegreen.workers")

EXIT_OK: Final = 0
EXIT_FORCED: Final = 1
START_TIMEOUT: Final = 30.0  # seconds for a worker to listen and apply the state
RESTART_INTERVAL: Final = 1.0  # at most one restart per slot per this many seconds


def usable_cpus() -> int:
    """CPUs this process may run on, lowered to a cgroup (v2) CPU quota if one is set."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def worker_count(config: Config) -> int:
    """``config.workers`` with ``auto`` resolved."""
    return usable_cpus() if config.workers == "auto" else int(config.workers)


def reserve_port(config: Config) -> socket.socket:
    """Bind (never listen on) the proxy address with SO_REUSEPORT: the workers' port.

    A bound socket that does not listen gets no connections, but keeps the
    port (and, with port 0, the one the kernel picked) for the workers.
    """
    address = config.listeners.proxy
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    family, kind, proto, _, sockaddr = infos[0]
    probe = socket.socket(family, kind, proto)
    sock = socket.socket(family, kind, proto)
    try:
        # First without SO_REUSEPORT: another server that also set it (a second
        # bluegreen started by mistake) would otherwise share the port silently.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(sockaddr)
        sockaddr = probe.getsockname()  # port 0: the one the kernel picked
        probe.close()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        probe.close()
        sock.close()
        raise ConfigError(
            "listeners.proxy",
            f"cannot listen on {address}: {exc.strerror or exc}; "
            "pick a free address or stop what is using it",
            source=config.source,
        ) from None
    return sock


# --------------------------------------------------------------------------- numbers


def _add(a: ColourSnapshot, b: ColourSnapshot) -> ColourSnapshot:
    return ColourSnapshot(
        requests=a.requests + b.requests,
        by_class=tuple(x + y for x, y in zip(a.by_class, b.by_class, strict=True)),
        in_flight=a.in_flight + b.in_flight,
        connect_errors=a.connect_errors + b.connect_errors,
        timeouts=a.timeouts + b.timeouts,
        pool_waits=a.pool_waits + b.pool_waits,
        pool_rejections=a.pool_rejections + b.pool_rejections,
        retries=a.retries + b.retries,
        duration_sum=a.duration_sum + b.duration_sum,
        duration_counts=tuple(
            x + y for x, y in zip(a.duration_counts, b.duration_counts, strict=True)
        ),
    )


def _empty(colour: Colour) -> ColourSnapshot:
    return ColourStats(colour).snapshot()


def _sum_gauges(a: PoolGauge, b: PoolGauge) -> PoolGauge:
    return PoolGauge(a.colour, a.server, a.idle + b.idle, a.busy + b.busy, a.waiting + b.waiting)


class _LowestApplied:
    """What :class:`ControlPlaneCollector` reads of a replica, for the slowest worker."""

    def __init__(self, replicas: Callable[[], Sequence[Replica]]) -> None:
        self._replicas = replicas

    def _lowest(self) -> Replica | None:
        return min(self._replicas(), key=lambda r: r.applied_version, default=None)

    @property
    def applied(self) -> StateDocument | None:
        lowest = self._lowest()
        return None if lowest is None else lowest.applied

    @property
    def applied_version(self) -> int:
        lowest = self._lowest()
        return 0 if lowest is None else lowest.applied_version


class _Totals:
    """Counters of one slot: its dead workers' (``base``) plus the live one's."""

    def __init__(self) -> None:
        self.base_blue = _empty(Colour.BLUE)
        self.base_green = _empty(Colour.GREEN)
        self.base_rejected: dict[int, int] = {}
        self.base_mirrors = (0, 0, 0)
        self.base_log_dropped = 0
        self.live: WorkerStats | None = None

    def fold(self) -> None:
        """The live worker is gone: keep its counters (in-flight ones are over)."""
        live = self.live
        if live is None:
            return
        self.base_blue = _add(self.base_blue, dataclasses.replace(live.blue, in_flight=0))
        self.base_green = _add(self.base_green, dataclasses.replace(live.green, in_flight=0))
        for status, count in live.rejected.items():
            self.base_rejected[status] = self.base_rejected.get(status, 0) + count
        sent, dropped, failed = self.base_mirrors
        self.base_mirrors = (
            sent + live.mirrors[0],
            dropped + live.mirrors[1],
            failed + live.mirrors[2],
        )
        self.base_log_dropped += live.log_dropped
        self.live = None

    def snapshot(self) -> StatsSnapshot:
        live = self.live
        if live is None:
            return StatsSnapshot(at=monotonic(), blue=self.base_blue, green=self.base_green)
        return StatsSnapshot(
            at=monotonic(),
            blue=_add(self.base_blue, live.blue),
            green=_add(self.base_green, live.green),
        )


# --------------------------------------------------------------------------- one worker


class WorkerReplica(Replica):
    """A replica whose proxy runs in a worker: applied once the worker says so."""

    def __init__(self, slot: WorkerSlot, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot = slot
        self.sent: StateDocument | None = None

    def apply(self, doc: StateDocument) -> None:
        """Send ``doc`` to the worker (it is marked applied when the worker confirms)."""
        if self.sent is not None and doc.version <= self.sent.version:
            return
        self.sent = doc
        self.slot.send_state(doc)

    def confirmed(self, version: int) -> None:
        """The worker runs ``version``."""
        if self.sent is not None and self.sent.version == version:
            self.mark_applied(self.sent)

    def info(self) -> ReplicaInfo:
        """The heartbeat, naming the worker's process."""
        return dataclasses.replace(super().info(), pid=self.slot.pid)


class WorkerSlot:
    """The control process's end of one worker: its process, channel, counters and replica.

    Also what :class:`~bluegreen.replica.Replica` needs from "its proxy":
    :meth:`wait_drained` and :meth:`stats_snapshot`.
    """

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.totals = _Totals()
        self.process: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.Event()
        self.updated = asyncio.Event()  # set (and replaced) on every counters message
        self.pid = 0
        self.exit_code: int | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.replica: WorkerReplica | None = None
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- what Replica calls

    def stats_snapshot(self) -> StatsSnapshot:
        """This worker's counters (the share its heartbeat reports)."""
        return self.totals.snapshot()

    async def wait_drained(self, colour: Colour, timeout: float) -> bool:  # noqa: ASYNC109  # Replica's interface
        """Wait until this worker reports nothing in flight to ``colour``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    live = self.totals.live
                    if live is not None and getattr(live, colour.value).in_flight == 0:
                        return True
                    await self.updated.wait()
        except TimeoutError:
            return False

    # ----------------------------------------------------------------- process

    def send_state(self, doc: StateDocument) -> None:
        self.send("state", to_json(doc))

    def send(self, *message: Any) -> None:
        writer = self.writer
        if writer is not None and not writer.is_closing() and self.ready.is_set():
            writer.write(encode(message))

    def start(self) -> None:
        """Run (and keep running) this slot's worker in the background."""
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"worker {self.index}"
        )

    async def _spawn(self) -> asyncio.subprocess.Process:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bluegreen.worker",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        self.process = process
        self.writer = writer
        self.pid = process.pid
        self.started_at = monotonic()
        pool = self.pool
        doc = pool.plane.store.current
        replica = self.replica
        if replica is not None:
            replica.sent = doc
        writer.write(
            encode(
                (
                    "init",
                    WorkerInit(
                        slot=self.index,
                        config=pool.config,
                        host=pool.host,
                        port=pool.port,
                        state=to_json(doc),
                    ),
                )
            )
        )
        pool.reader_tasks.add(
            asyncio.get_running_loop().create_task(
                self._read(reader), name=f"worker {self.index} reader"
            )
        )
        return process

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await read_message(reader)
            except Exception:
                # A worker we cannot understand is of no use: restart it.
                log.exception("worker_message_invalid", worker=self.index)
                if self.process is not None and self.process.returncode is None:
                    self.process.kill()
                return
            if message is None:
                return
            kind = message[0]
            if kind == "ready":
                _, pid, version, stats = message
                self.pid = pid
                self._counters(stats)
                self.ready.set()
                if self.replica is not None:
                    self.replica.confirmed(version)
                    # A change that came while it started: send the newest state now.
                    self.replica.apply(self.pool.plane.store.current)
            elif kind == "applied":
                _, version, stats = message
                self._counters(stats)
                if self.replica is not None:
                    self.replica.confirmed(version)
            elif kind == "stats":
                self._counters(message[1])

    def _counters(self, stats: WorkerStats) -> None:
        self.totals.live = stats
        updated = self.updated
        self.updated = asyncio.Event()
        updated.set()
        self.pool.refresh()

    async def _supervise(self) -> None:
        pool = self.pool
        while True:
            self.ready.clear()
            try:
                process = await self._spawn()
            except Exception:
                log.exception("worker_start_failed", worker=self.index)
                pool.failed.set()
                return
            code = await process.wait()
            self.exit_code = code
            if self.writer is not None:
                self.writer.close()
            self.totals.fold()
            self.pool.refresh()
            if pool.stopping:
                return
            if code == EXIT_FAILED and not self.ready.is_set():
                log.error("worker_failed_to_start", worker=self.index, exit_code=code)
                pool.failed.set()
                return
            self.restarts += 1
            log.error(
                "worker_exited",
                worker=self.index,
                pid=process.pid,
                exit_code=code,
                restart=self.restarts,
            )
            wait = RESTART_INTERVAL - (monotonic() - self.started_at)
            if wait > 0:
                await asyncio.sleep(wait)

    async def stopped(self) -> None:
        """Wait for this slot's supervision to end (after :attr:`WorkerPool.stopping`)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# --------------------------------------------------------------------------- all workers


class WorkerPool:
    """N worker slots, their replicas, and the sum of their numbers (a proxy-like view)."""

    def __init__(self, config: Config, plane: ControlPlane, count: int, host: str, port: int):
        self.config = config
        self.plane = plane
        self.host = host
        self.port = port
        self.stopping = False
        self.draining = False
        self.failed = asyncio.Event()
        self.reader_tasks: set[asyncio.Task[None]] = set()
        self.slots = [WorkerSlot(self, i) for i in range(1, count + 1)]
        # The sum over workers, in the shape the admin API and /metrics read.
        self.metrics = ProxyMetrics(pools=self._pools)
        self._pool_gauges: list[PoolGauge] = []
        self._log_dropped = 0
        self.metrics.access_log_dropped = lambda: self._log_dropped

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def registry(self) -> Any:
        return self.metrics.registry

    @property
    def replicas(self) -> list[WorkerReplica]:
        return [slot.replica for slot in self.slots if slot.replica is not None]

    def make_replicas(self, base_id: str) -> None:
        listen = f"{self.host}:{self.port}"
        settings = self.plane.settings
        for slot in self.slots:
            replica = WorkerReplica(
                slot,
                self.plane.store,
                _safe_replica_id(f"{base_id}:w{slot.index}"),
                heartbeat_interval=settings.heartbeat_interval,
                listen=listen,
                extra={"worker": slot.index},
            )
            replica.proxy = slot  # type: ignore[assignment]  # wait_drained/stats_snapshot
            replica.stats = slot.stats_snapshot
            replica.fast_interval = settings.rollout_heartbeat_interval
            slot.replica = replica

    async def start(self) -> None:
        """Start every worker; return once all listen and run the current state."""
        for slot in self.slots:
            slot.start()

        async def all_ready() -> None:
            for slot in self.slots:
                await slot.ready.wait()

        async def one_failed() -> None:
            await self.failed.wait()

        ready = asyncio.ensure_future(all_ready())
        failed = asyncio.ensure_future(one_failed())
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await asyncio.wait({ready, failed}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise ConfigError(
                "workers", f"the workers did not start within {START_TIMEOUT:g}s; see their log"
            ) from None
        finally:
            failed.cancel()
            ready.cancel()
        if self.failed.is_set():
            raise ConfigError(
                "listeners.proxy",
                f"a worker could not listen on {self.host}:{self.port}; see its log",
                source=self.config.source,
            )
        for replica in self.replicas:
            replica.attach(replica.proxy)  # its WorkerSlot
            replica.start_heartbeats()

    def stats_snapshot(self) -> StatsSnapshot:
        """Every worker's counters added up."""
        blue, green = _empty(Colour.BLUE), _empty(Colour.GREEN)
        for slot in self.slots:
            snap = slot.totals.snapshot()
            blue, green = _add(blue, snap.blue), _add(green, snap.green)
        return StatsSnapshot(at=monotonic(), blue=blue, green=green)

    def refresh(self) -> None:
        """Put the sum of the workers' counters where the /metrics collector reads them."""
        snap = self.stats_snapshot()
        m = self.metrics
        for stats, s in ((m.blue, snap.blue), (m.green, snap.green)):
            stats.by_class = [0, *s.by_class]
            stats.in_flight = s.in_flight
            stats.duration_counts = list(s.duration_counts)
            stats.duration_sum = s.duration_sum
            stats.connect_errors = s.connect_errors
            stats.timeouts = s.timeouts
            stats.pool_waits = s.pool_waits
            stats.pool_rejections = s.pool_rejections
            stats.retries = s.retries
        rejected: dict[int, int] = {}
        mirrors = [0, 0, 0]
        gauges: list[PoolGauge] = []
        dropped = 0
        for slot in self.slots:
            t = slot.totals
            parts = [(t.base_rejected, t.base_mirrors, t.base_log_dropped)]
            if t.live is not None:
                parts.append((t.live.rejected, t.live.mirrors, t.live.log_dropped))
                gauges.extend(t.live.pools)
            for rej, mir, drop in parts:
                for status, count in rej.items():
                    rejected[status] = rejected.get(status, 0) + count
                for i in range(3):
                    mirrors[i] += mir[i]
                dropped += drop
        m.rejected = rejected
        m.mirrors_sent, m.mirrors_dropped, m.mirrors_failed = mirrors
        self._pool_gauges = gauges
        self._log_dropped = dropped

    def _pools(self) -> list[PoolGauge]:
        # Each worker has its own pools: one gauge per (worker, server), summed per server.
        summed: dict[tuple[Colour, str], PoolGauge] = {}
        for g in self._pool_gauges:
            key = (g.colour, g.server)
            had = summed.get(key)
            summed[key] = g if had is None else _sum_gauges(had, g)
        return list(summed.values())

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109  # a deadline, not a cancel scope
        """Ask every worker to drain; True when all exited within ``timeout`` (+ grace)."""
        self.stopping = True
        self.draining = True
        for slot in self.slots:
            slot.send("drain")
            process = slot.process
            if process is not None and process.returncode is None and not slot.ready.is_set():
                process.send_signal(signal.SIGTERM)  # still starting: no channel yet
        try:
            async with asyncio.timeout(timeout + 5.0):
                await asyncio.gather(*(slot.stopped() for slot in self.slots))
        except TimeoutError:
            return False
        return all(slot.exit_code == EXIT_OK for slot in self.slots)

    async def stop(self) -> None:
        """Cut every worker now."""
        self.stopping = True
        self.draining = True
        for slot in self.slots:
            slot.send("stop")
            process = slot.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                    process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5.0):
                await asyncio.gather(*(slot.stopped() for slot in self.slots))
        except TimeoutError:
            for slot in self.slots:
                if slot.process is not None and slot.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        slot.process.kill()
            await asyncio.gather(*(slot.stopped() for slot in self.slots))

    async def close(self) -> None:
        """Stop heartbeats and readers (after the workers are gone)."""
        if not self.stopping:
            await self.stop()
        for replica in self.replicas:
            await replica.stop()
        for task in list(self.reader_tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --------------------------------------------------------------------------- control plane


async def start_control(
    plane: ControlPlane,
    pool: WorkerPool,
    *,
    extra_routes: Sequence[Route] = (),
    extra_schemas: Any = None,
) -> AdminServer:
    """:meth:`ControlPlane.start` for workers: N replicas, one admin API over their sum."""
    base_id = plane.replica_id_for(f"{pool.host}:{pool.port}")
    pool.make_replicas(base_id)
    await pool.start()
    await plane._start_health(pool)  # type: ignore[arg-type]  # reads .config only
    lowest = _LowestApplied(lambda: pool.replicas)
    pool.metrics.register(ControlPlaneCollector(lowest, plane.upstream_health))  # type: ignore[arg-type]  # reads .applied and .applied_version
    admin = await plane.serve_admin(
        registry=pool.registry,
        stats=pool.stats_snapshot,
        serving=lambda: not pool.draining,
        replica_id=base_id,
        extra_routes=extra_routes,
        extra_schemas=extra_schemas,
        replicas=[r.id for r in pool.replicas],
    )
    for replica in pool.replicas:
        replica.extra["admin"] = admin.url
    return admin


async def serve_workers(config: Config, plane: ControlPlane, count: int, cut: CutAfterDrain) -> int:
    """Run ``count`` workers and the control plane until a signal; drain; the exit code."""
    # Imported here: the controller (and its migrations code) only loads for serve.
    from bluegreen.admin_rollout import rollout_routes
    from bluegreen.controller.executors import ControllerSettings
    from bluegreen.controller.runner import RolloutController

    loop = asyncio.get_running_loop()
    reservation = reserve_port(config)
    host, port = reservation.getsockname()[:2]
    pool = WorkerPool(config, plane, count, str(host), int(port))
    controller = RolloutController(
        plane.store, ControllerSettings.from_config(config), actor=f"controller@{plane.actor}"
    )
    routes, schemas = rollout_routes(controller)
    signals = DrainSignals()
    try:
        admin = await start_control(plane, pool, extra_routes=routes, extra_schemas=schemas)
        first = pool.replicas[0]
        controller.attach(
            prober=plane.health, replica_extra=first.extra, metrics_url=f"{admin.url}/metrics"
        )
        pool.metrics.register(controller.metrics)
        await controller.start()
        signals.install()
        log.info(
            "proxy_listening",
            address=f"{host}:{port}",
            workers=count,
            pids=[slot.pid for slot in pool.slots],
            blue=[str(a) for a in config.upstreams["blue"].servers],
            green=[str(a) for a in config.upstreams["green"].servers],
            green_weight_percent=plane.store.current.green_weight_bp / 100,
            state_version=plane.store.current.version,
            admin=admin.url,
            event_loop=type(loop).__module__.split(".")[0],
            data_plane=data_plane_build(),
        )
        freeze_startup_objects()
        signal_name = await signals.first()
        await controller.step_down()
        log.info(
            "drain_started", signal=signal_name, timeout_s=config.timeouts.drain, workers=count
        )
        drained = await signals.drain(pool.drain(config.timeouts.drain), pool.stop)
        if drained is None:
            log.warning("drain_forced", workers=count)
            return EXIT_FORCED
        log.info("proxy_stopped", drained=drained)
        return EXIT_OK
    finally:
        cut.arm()  # replaces on_signal for the clean-up that is left
        await controller.stop()
        await pool.close()
        reservation.close()
