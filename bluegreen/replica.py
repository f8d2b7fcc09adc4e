"""One proxy replica's control plane: state in, heartbeats out, admin API beside it.

Theory of operation
-------------------
The proxy never awaits the state store. The store pushes every newer
document it observes (its own writes, LISTEN/NOTIFY, polls) to
:meth:`Replica.apply`, a plain callback in the event loop, which pushes the
weights, salt and mirror share into the proxy's router and swaps the flag
set the request-header hook reads. Both are attribute assignments: the next
request sees them, no request waits for them. Then it wakes the heartbeat
task, which writes the applied version to the store at once, so a writer
waiting with ``?wait`` learns within one store round trip that this replica
runs its change. While the store is unreachable the proxy keeps serving the
last applied document and heartbeats fail (logged, retried).

The stored document wins over the config file: ``routing.green_weight``,
``salt`` and ``mirror_percent`` only seed the document when the store creates
it. A config that disagrees with the stored document is logged
(``config_weights_ignored``) so an operator who edited the file knows why it
had no effect.

:class:`ControlPlane` wires it together for ``bluegreen serve``: open the
store, attach the replica to the proxy, probe the upstreams, register the
control-plane metrics, start the admin listener; and the reverse on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bluegreen import __version__
from bluegreen.admin import (
    AdminContext,
    AdminServer,
    AdminSettings,
    Route,
    ServerHealth,
    create_app,
    start_admin,
)
from bluegreen.config import DEFAULT_STATE_URL
from bluegreen.controller.stats import TRAFFIC_KEY, traffic_payload, wants_fast_heartbeats
from bluegreen.errors import ConfigError
from bluegreen.flags import FlagHeaderCache
from bluegreen.health.probes import HealthProber
from bluegreen.routing import BASIS_POINTS, Colour
from bluegreen.state import open_store
from bluegreen.state.model import ReplicaInfo, StateDocument, format_time, initial_document
from bluegreen.state.store import StateStore, run_heartbeats

if TYPE_CHECKING:
    from bluegreen.config import Address, Config
    from bluegreen.metrics import StatsSnapshot
    from bluegreen.proxy import ProxyServer
    from bluegreen.rollout_config import ProbeConfig

log = structlog.get_logger("bluegreen.replica")

DRAIN_REPORT_TIMEOUT = 600.0  # seconds a replica watches a colour it stopped sending to


# --------------------------------------------------------------------------- the replica


class Replica:
    """Applies each state version to a proxy and heartbeats the version it applied."""

    def __init__(
        self,
        store: StateStore,
        replica_id: str,
        *,
        heartbeat_interval: float = 2.0,
        listen: str = "",
        extra: dict[str, object] | None = None,
    ) -> None:
        self.store = store
        self.id = replica_id
        self.heartbeat_interval = heartbeat_interval
        self.listen = listen
        self.extra: dict[str, object] = dict(extra or {})
        self.flags = FlagHeaderCache()
        self.applied: StateDocument | None = None
        self.proxy: ProxyServer | None = None
        self.started_at = format_time(datetime.now(UTC))
        self._host = socket.gethostname()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        # The proxy's per-colour counters, published in heartbeats for the rollout
        # controller (analysis and drains); heartbeats run every ``fast_interval``
        # while a rollout is active.
        self.stats: Callable[[], StatsSnapshot] | None = None
        self.fast_interval: float | None = None
        self._fast = False
        self._ticker: asyncio.Task[None] | None = None
        self._drain_waits: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- applying

    def attach(self, proxy: ProxyServer | None) -> None:
        """Apply the current document to ``proxy`` now, then every newer one as it arrives."""
        self.proxy = proxy
        self.apply(self.store.current)
        if not self._unsubscribe:
            self._unsubscribe.append(self.store.subscribe(self.apply))

    def apply(self, doc: StateDocument) -> None:
        """Push ``doc`` into the proxy (weights, salt, mirror, flags); never raises."""
        previous = self.applied
        if previous is not None and doc.version <= previous.version:
            return
        try:
            if self.proxy is not None:
                self.proxy.set_routing(
                    doc.green_weight_bp, salt=doc.salt.encode("utf-8"), mirror_bp=doc.mirror_bp
                )
            flags = list(doc.flags.values())
            self.flags.replace(flags)
        except ValueError:
            # The document was validated when it was parsed; this is a bug, not input.
            log.exception("state_apply_failed", version=doc.version)
            return
        self.mark_applied(doc)

    def mark_applied(self, doc: StateDocument) -> None:
        """Record that the proxy runs ``doc`` now: heartbeat it, watch drains, log weights.

        Called by :meth:`apply`, or later by a replica whose proxy is in another
        process (a serve worker), once that process confirms.
        """
        previous = self.applied
        if previous is not None and doc.version <= previous.version:
            return
        self.applied = doc
        self._wake.set()
        self._fast = wants_fast_heartbeats(doc.rollout)
        if previous is not None and self.proxy is not None:
            for colour in Colour:
                if previous.weight_bp(colour) and not doc.weight_bp(colour):
                    self._report_when_drained(colour)
        if previous is None or previous.green_weight_bp != doc.green_weight_bp:
            log.info(
                "weights_applied",
                version=doc.version,
                green_percent=doc.green_weight_bp / 100,
                replica=self.id,
            )

    def _report_when_drained(self, colour: Colour) -> None:
        """Heartbeat as soon as ``colour``'s last request finishes (a drain is being awaited)."""
        proxy = self.proxy
        if proxy is None:
            return

        async def wait() -> None:
            if await proxy.wait_drained(colour, DRAIN_REPORT_TIMEOUT):
                self._wake.set()

        try:
            task = asyncio.get_running_loop().create_task(wait(), name=f"drain report {colour}")
        except RuntimeError:  # no running loop (a synchronous caller): the next beat reports it
            return
        self._drain_waits.add(task)
        task.add_done_callback(self._drain_waits.discard)

    def header_line(self, key: bytes | None, colour: Colour) -> bytes:
        """The proxy's request-header hook: the ``X-Bluegreen-Flags`` line for this request."""
        return self.flags.header_line(key, colour)

    @property
    def applied_version(self) -> int:
        """The version this replica runs (0 before the first apply)."""
        return 0 if self.applied is None else self.applied.version

    # ----------------------------------------------------------------- heartbeats

    def info(self) -> ReplicaInfo:
        """What the next heartbeat reports."""
        return ReplicaInfo(
            id=self.id,
            applied_version=self.applied_version,
            host=self._host,
            pid=os.getpid(),
            listen=self.listen,
            started_at=self.started_at,
            extra={**self.extra, **self._traffic(), "bluegreen": __version__},
        )

    def _traffic(self) -> dict[str, object]:
        if self.stats is None:
            return {}
        return {TRAFFIC_KEY: traffic_payload(self.stats())}

    def start_heartbeats(self) -> None:
        """Heartbeat now, every ``heartbeat_interval`` and right after each apply."""
        if self._task is None:
            self._wake.set()
            self._task = asyncio.create_task(
                run_heartbeats(
                    self.store, self.info, interval=self.heartbeat_interval, wake=self._wake
                ),
                name=f"heartbeats {self.id}",
            )
        if self._ticker is None and self.fast_interval is not None:
            self._ticker = asyncio.create_task(self._tick_fast(), name=f"fast heartbeats {self.id}")

    async def _tick_fast(self) -> None:
        """While a rollout is active, wake the heartbeat every ``fast_interval``."""
        interval = self.fast_interval or self.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            if self._fast:
                self._wake.set()

    async def stop(self) -> None:
        """Stop following the store and heartbeating (the store marks us stopped on close)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for task in [self._ticker, *self._drain_waits]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ticker = None
        self._drain_waits.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# --------------------------------------------------------------------------- upstream reachability


class ReachabilityProber:
    """Whether each upstream server accepts TCP connections, checked every ``interval``.

    The coarse health signal ``/readyz`` and ``bluegreen_upstream_up`` use
    until the active HTTP health prober replaces it (any object with a
    ``snapshot()`` returning :class:`ServerHealth` values will do). A server
    flips after ``threshold`` agreeing results, so one lost SYN does not mark
    a colour down.
    """

    def __init__(
        self,
        servers: Iterable[tuple[Colour, Address]],
        *,
        interval: float = 2.0,
        timeout: float = 1.0,
        threshold: int = 2,
    ) -> None:
        self.servers = list(servers)
        self.interval = interval
        self.timeout = timeout
        self.threshold = threshold
        self._state: dict[tuple[Colour, str], ServerHealth] = {}
        self._streak: dict[tuple[Colour, str], int] = {}
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> list[ServerHealth]:
        """The latest verdict per server (servers never checked count as up)."""
        return [
            self._state.get((c, str(a)), ServerHealth(c, str(a), True, "not checked yet"))
            for c, a in self.servers
        ]

    async def check_once(self) -> None:
        """Check every server once, concurrently."""
        await asyncio.gather(*(self._check(c, a) for c, a in self.servers))

    async def _check(self, colour: Colour, address: Address) -> None:
        name = str(address)
        try:
            async with asyncio.timeout(self.timeout):
                _, writer = await asyncio.open_connection(address.host, address.port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            up, detail = True, "accepting connections"
        except TimeoutError:
            up, detail = False, f"no connection within {self.timeout:g}s"
        except OSError as exc:
            up, detail = False, exc.strerror or type(exc).__name__
        key = (colour, name)
        before = self._state.get(key)
        if before is None:
            self._state[key] = ServerHealth(colour, name, up, detail)
            return
        if before.up == up:
            self._streak[key] = 0
            self._state[key] = ServerHealth(colour, name, up, detail)
            return
        streak = self._streak.get(key, 0) + 1
        self._streak[key] = streak
        if streak >= self.threshold:
            self._streak[key] = 0
            self._state[key] = ServerHealth(colour, name, up, detail)
            event = "upstream_up" if up else "upstream_down"
            log.warning(event, colour=colour.value, server=name, detail=detail)

    async def run(self) -> None:
        """Check forever (cancel to stop)."""
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Run in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="upstream-reachability")

    async def stop(self) -> None:
        """Stop the background checks."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# --------------------------------------------------------------------------- metrics


class ControlPlaneCollector(Collector):
    """Weights, applied state version, flags and upstream reachability, at scrape time."""

    def __init__(
        self, replica: Replica, upstreams: Callable[[], Sequence[ServerHealth]] | None = None
    ) -> None:
        self._replica = replica
        self._upstreams = upstreams

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(with_values=False))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(with_values=True))

    def _families(self, *, with_values: bool) -> list[Metric]:
        weight = GaugeMetricFamily(
            "bluegreen_weight_ratio",
            "Share of traffic each colour gets (0..1), as applied by this replica.",
            labels=["colour"],
        )
        mirror = GaugeMetricFamily(
            "bluegreen_mirror_ratio",
            "Share of blue's safe requests copied to green (0..1).",
        )
        version = GaugeMetricFamily(
            "bluegreen_state_version_applied",
            "Version of the state document this replica runs.",
        )
        flags = GaugeMetricFamily("bluegreen_feature_flags", "Feature flags defined.")
        up = GaugeMetricFamily(
            "bluegreen_upstream_up",
            "1 when the upstream server passes its health checks, else 0.",
            labels=["colour", "server"],
        )
        families: list[Metric] = [weight, mirror, version, flags, up]
        if not with_values:
            return families
        doc = self._replica.applied
        if doc is not None:
            green = doc.green_weight_bp / BASIS_POINTS
            weight.add_metric(["blue"], 1 - green)
            weight.add_metric(["green"], green)
            mirror.add_metric([], doc.mirror_bp / BASIS_POINTS)
            flags.add_metric([], len(doc.flags))
        version.add_metric([], self._replica.applied_version)
        if self._upstreams is not None:
            for server in self._upstreams():
                up.add_metric([server.colour.value, server.server], 1.0 if server.up else 0.0)
        return families


def migration_registry() -> CollectorRegistry | None:
    """The migrations' registry (``migration_duration_seconds``) when that package loads."""
    try:
        from bluegreen.migrations.metrics import MIGRATION_REGISTRY
    except ImportError:
        return None
    return MIGRATION_REGISTRY


# --------------------------------------------------------------------------- wiring for serve


@dataclass(frozen=True, slots=True)
class ControlPlaneSettings:
    """Where the state lives and how this replica reports; what the admin API allows."""

    state_url: str = DEFAULT_STATE_URL
    state_key: str = "state.url"  # what a bad URL is blamed on: the config key or --state
    replica_id: str | None = None
    heartbeat_interval: float = 2.0
    replica_expiry: float = 10.0
    poll_interval: float | None = None
    admin_host: str = "127.0.0.1"
    admin_port: int = 9900
    admin_key: str = "listeners.admin"
    admin: AdminSettings = field(default_factory=AdminSettings)
    # HTTP health probes (health.probes); None or disabled: TCP reachability checks.
    probes: ProbeConfig | None = None
    reachability_interval: float = 2.0
    # Heartbeat interval while a rollout is active (analysis windows, drains).
    rollout_heartbeat_interval: float = 0.5

    @classmethod
    def from_config(
        cls, config: Config, *, state_key: str = "state.url", admin_key: str = "listeners.admin"
    ) -> ControlPlaneSettings:
        """Settings from a validated config (admin token already resolved)."""
        state = config.state
        admin = config.admin
        return cls(
            state_url=state.url,
            state_key=state_key,
            replica_id=state.replica_id,
            heartbeat_interval=state.heartbeat_interval,
            replica_expiry=state.replica_expiry,
            poll_interval=state.poll_interval,
            admin_host=config.listeners.admin.host,
            admin_port=config.listeners.admin.port,
            admin_key=admin_key,
            admin=AdminSettings(
                token=admin.token,
                max_body_bytes=admin.max_body_bytes,
                event_heartbeat=admin.event_heartbeat,
                max_event_streams=admin.max_event_streams,
            ),
            probes=config.health.probes,
            rollout_heartbeat_interval=max(
                0.1, min(state.heartbeat_interval, 0.5, config.health.analysis_interval)
            ),
        )


class ControlPlane:
    """Store, replica, upstream health, metrics and admin API of one ``bluegreen serve``.

    Order: :meth:`open` (the store, before the proxy exists, so the proxy is
    built with the flags hook), :meth:`start` once the proxy listens, and
    :meth:`close` after the proxy drained.
    """

    def __init__(self, settings: ControlPlaneSettings, store: StateStore, *, actor: str) -> None:
        self.settings = settings
        self.store = store
        self.actor = actor
        self.replica: Replica | None = None
        # The HTTP prober when health probes are on; the rollout controller can reuse it.
        self.health: HealthProber | None = None
        self.reachability: ReachabilityProber | None = None
        self.admin: AdminServer | None = None

    @classmethod
    async def open(
        cls,
        settings: ControlPlaneSettings,
        *,
        green_bp: int = 0,
        salt: str = "bluegreen",
        mirror_bp: int = 0,
    ) -> ControlPlane:
        """Open (creating if absent) the state store; the config seeds a new document only."""
        actor = f"{socket.gethostname()}:{os.getpid()}"
        initial = initial_document(
            actor=actor, now=datetime.now(UTC), green_bp=green_bp, salt=salt, mirror_bp=mirror_bp
        )
        try:
            store = open_store(
                settings.state_url,
                actor=actor,
                initial=initial,
                replica_expiry=settings.replica_expiry,
                poll_interval=settings.poll_interval,
            )
        except ConfigError as exc:
            raise ConfigError(settings.state_key, exc.problem) from None
        doc = await store.open()
        seeded = (green_bp, salt, mirror_bp)
        stored = (doc.green_weight_bp, doc.salt, doc.mirror_bp)
        if doc.version > 1 and seeded != stored:
            log.warning(
                "config_weights_ignored",
                store=store.location,
                version=doc.version,
                config_green_percent=green_bp / 100,
                stored_green_percent=doc.green_weight_bp / 100,
                config_mirror_percent=mirror_bp / 100,
                stored_mirror_percent=doc.mirror_bp / 100,
                salt_differs=salt != doc.salt,
                hint="the state store's weights win; change them with `bluegreen weights set`",
            )
        return cls(settings, store, actor=actor)

    def replica_for(self, listen: str) -> Replica:
        """The replica (created on first call); attach it to the proxy with :meth:`start`."""
        if self.replica is None:
            self.replica = Replica(
                self.store,
                self.replica_id_for(listen),
                heartbeat_interval=self.settings.heartbeat_interval,
                listen=listen,
            )
        return self.replica

    def replica_id_for(self, listen: str) -> str:
        """The configured replica id, else ``<hostname>:<proxy address>``, made valid."""
        return _safe_replica_id(self.settings.replica_id or f"{socket.gethostname()}:{listen}")

    def header_hook(self, key: bytes | None, colour: Colour) -> bytes:
        """The flags request-header hook, to give the proxy before the replica exists."""
        replica = self.replica
        return b"" if replica is None else replica.header_line(key, colour)

    def upstream_health(self) -> list[ServerHealth]:
        """Every upstream server's health from the HTTP probes, else from TCP checks."""
        if self.health is not None:
            return [
                ServerHealth(
                    v.colour, v.server, v.healthy, v.detail or ("" if v.checked else "not probed")
                )
                for v in self.health.servers()
            ]
        if self.reachability is not None:
            return self.reachability.snapshot()
        return []

    async def _start_health(self, proxy: ProxyServer) -> None:
        upstreams = proxy.config.upstreams
        servers = [
            (colour, address)
            for colour in (Colour.BLUE, Colour.GREEN)
            for address in upstreams[colour.value].servers
        ]
        probes = self.settings.probes
        if probes is not None and probes.enabled:
            self.health = HealthProber(
                {colour: [str(a) for c, a in servers if c is colour] for colour in Colour}, probes
            )
            await self.health.start()
            return
        self.reachability = ReachabilityProber(
            servers, interval=self.settings.reachability_interval
        )
        await self.reachability.check_once()
        self.reachability.start()

    async def start(
        self,
        proxy: ProxyServer,
        *,
        extra_routes: Sequence[Route] = (),
        extra_schemas: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> AdminServer:
        """Apply state to the started proxy, heartbeat, watch upstreams, serve the admin API.

        ``extra_routes``/``extra_schemas``: more admin routes (e.g. the rollout
        endpoints, built around the controller), served with the same auth,
        errors and OpenAPI document.
        """
        host, port = proxy.address
        replica = self.replica_for(f"{host}:{port}")
        replica.stats = proxy.stats_snapshot
        replica.fast_interval = self.settings.rollout_heartbeat_interval
        replica.attach(proxy)
        await self._start_health(proxy)
        proxy.metrics.register(ControlPlaneCollector(replica, self.upstream_health))
        admin = await self.serve_admin(
            registry=proxy.registry,
            stats=proxy.stats_snapshot,
            serving=lambda: not proxy.draining,
            replica_id=replica.id,
            extra_routes=extra_routes,
            extra_schemas=extra_schemas,
            replica=replica.id,
            version=replica.applied_version,
        )
        replica.extra["admin"] = admin.url
        replica.start_heartbeats()
        return admin

    async def serve_admin(
        self,
        *,
        registry: CollectorRegistry,
        stats: Callable[[], StatsSnapshot],
        serving: Callable[[], bool],
        replica_id: str,
        extra_routes: Sequence[Route] = (),
        extra_schemas: Mapping[str, Mapping[str, Any]] | None = None,
        **log_fields: Any,
    ) -> AdminServer:
        """Serve the admin API over these numbers (one proxy's, or the sum of serve's workers).

        ``log_fields`` go into the ``admin_listening`` line.
        """
        registries = [registry]
        migrations = migration_registry()
        if migrations is not None:
            registries.append(migrations)
        ctx = AdminContext(
            store=self.store,
            actor=f"admin@{replica_id}",
            settings=self.settings.admin,
            registries=registries,
            stats=stats,
            upstreams=self.upstream_health,
            serving=serving,
            replica_id=replica_id,
        )
        app = create_app(ctx, extra_routes=extra_routes, extra_schemas=extra_schemas)
        try:
            self.admin = await start_admin(app, self.settings.admin_host, self.settings.admin_port)
        except OSError as exc:
            raise ConfigError(
                self.settings.admin_key,
                f"cannot listen on {self.settings.admin_host}:{self.settings.admin_port}: "
                f"{exc.strerror or exc}; pick a free address or stop what is using it",
            ) from None
        log.info(
            "admin_listening",
            address=f"{self.admin.host}:{self.admin.port}",
            url=self.admin.url,
            auth="bearer" if self.settings.admin.token else "none",
            store=self.store.location,
            **log_fields,
        )
        if not self.settings.admin.token:
            log.warning(
                "admin_auth_disabled",
                address=f"{self.admin.host}:{self.admin.port}",
                detail="no admin.token or BLUEGREEN_ADMIN_TOKEN: any local process can change "
                "weights and flags (browsers are refused); set a token to require one",
            )
        return self.admin

    async def close(self) -> None:
        """Stop the admin API, health checks and heartbeats; close the store (marks us stopped)."""
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        if self.health is not None:
            await self.health.stop()
        if self.reachability is not None:
            await self.reachability.stop()
        if self.replica is not None:
            await self.replica.stop()
        await self.store.close()


def _safe_replica_id(text: str) -> str:
    """``text`` with characters a replica id may not hold replaced by ``-``."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@-")
    cleaned = "".join(ch if ch in allowed else "-" for ch in text)[:128]
    if not cleaned or not cleaned[0].isalnum():
        cleaned = f"r{cleaned}"[:128]
    return cleaned
