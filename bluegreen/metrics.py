"""Proxy metrics: plain counters on the hot path, Prometheus families at scrape time.

The data plane only ever does ``stats.in_flight += 1`` or appends to a list
of ints; turning those into Prometheus families happens in a custom
collector when ``/metrics`` is scraped. Each server object owns its own
:class:`~prometheus_client.CollectorRegistry` (never the global default), so
tests can run several proxies in one process.

Later features add their families by registering another collector on the
same registry (see :meth:`ProxyMetrics.register`), e.g. weights, rollout
phase and migration durations.

Names follow Prometheus conventions: ``bluegreen_*``, base units
(``_seconds``), counters end in ``_total``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bluegreen.routing import Colour

# Upper bounds (seconds) of the request-duration histogram buckets; +Inf is implied.
DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
# by_class index of each status code (a list index beats // and a test per request);
# codes 600..999, which llhttp lets through, count as 5xx.
_STATUS_CLASS: Final = [min(code // 100, 5) for code in range(1000)]


class ColourStats:
    """Cumulative counters for one colour, bumped in place by the data plane."""

    __slots__ = (
        "by_class",
        "colour",
        "connect_errors",
        "duration_counts",
        "duration_sum",
        "in_flight",
        "pool_rejections",
        "pool_waits",
        "retries",
        "timeouts",
    )

    def __init__(self, colour: Colour) -> None:
        self.colour = colour
        self.in_flight = 0
        # Index = status // 100; 0 is unused (kept so the index needs no offset).
        self.by_class = [0, 0, 0, 0, 0, 0]
        # One slot per bucket plus the +Inf overflow (not cumulative).
        self.duration_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.connect_errors = 0
        self.timeouts = 0
        self.pool_waits = 0
        self.pool_rejections = 0
        self.retries = 0

    def observe(self, status: int, duration: float) -> None:
        """Count one finished request (any status, including 499 client gone)."""
        self.by_class[_STATUS_CLASS[status] if status < 1000 else 5] += 1
        self.duration_counts[bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration

    def snapshot(self) -> ColourSnapshot:
        """An immutable copy of the counters."""
        return ColourSnapshot(
            requests=sum(self.by_class),
            by_class=tuple(self.by_class[1:]),
            in_flight=self.in_flight,
            connect_errors=self.connect_errors,
            timeouts=self.timeouts,
            pool_waits=self.pool_waits,
            pool_rejections=self.pool_rejections,
            retries=self.retries,
            duration_sum=self.duration_sum,
            duration_counts=tuple(self.duration_counts),
        )


@dataclass(frozen=True, slots=True)
class ColourSnapshot:
    """Cumulative per-colour numbers at one instant (``in_flight`` is a level).

    Subtract two snapshots with :meth:`since` to get the numbers of a window,
    which is what passive health analysis compares between colours.
    """

    requests: int
    by_class: tuple[int, ...]  # 1xx..5xx
    in_flight: int
    connect_errors: int
    timeouts: int
    pool_waits: int
    pool_rejections: int
    retries: int
    duration_sum: float
    duration_counts: tuple[int, ...]  # per DURATION_BUCKETS slot, last = +Inf

    @property
    def errors_5xx(self) -> int:
        """Responses with a 5xx status (including the proxy's own 502/503/504)."""
        return self.by_class[4]

    def since(self, older: ColourSnapshot) -> ColourSnapshot:
        """The counts accumulated between ``older`` and this snapshot."""
        return ColourSnapshot(
            requests=self.requests - older.requests,
            by_class=tuple(a - b for a, b in zip(self.by_class, older.by_class, strict=True)),
            in_flight=self.in_flight,
            connect_errors=self.connect_errors - older.connect_errors,
            timeouts=self.timeouts - older.timeouts,
            pool_waits=self.pool_waits - older.pool_waits,
            pool_rejections=self.pool_rejections - older.pool_rejections,
            retries=self.retries - older.retries,
            duration_sum=self.duration_sum - older.duration_sum,
            duration_counts=tuple(
                a - b for a, b in zip(self.duration_counts, older.duration_counts, strict=True)
            ),
        )

    def duration_quantile(self, q: float) -> float | None:
        """Upper bucket bound below which a share ``q`` of requests finished (None if none).

        Requests slower than the last bound report ``inf``.
        """
        total = sum(self.duration_counts)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for bound, count in zip(
            (*DURATION_BUCKETS, float("inf")), self.duration_counts, strict=True
        ):
            seen += count
            if seen >= rank:
                return bound
        return float("inf")


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Per-colour cumulative numbers of one proxy at one instant (``at``: time.monotonic())."""

    at: float
    blue: ColourSnapshot
    green: ColourSnapshot

    def colour(self, colour: Colour) -> ColourSnapshot:
        """The snapshot of one colour."""
        return self.blue if colour is Colour.BLUE else self.green

    def since(self, older: StatsSnapshot) -> StatsSnapshot:
        """Both colours' counts accumulated since ``older``."""
        return StatsSnapshot(
            at=self.at, blue=self.blue.since(older.blue), green=self.green.since(older.green)
        )


@dataclass(frozen=True, slots=True)
class PoolGauge:
    """Connections of one upstream server at scrape time."""

    colour: Colour
    server: str
    idle: int
    busy: int
    waiting: int


class ProxyMetrics:
    """The proxy's counters and the registry they are exposed through."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        pools: Callable[[], Iterable[PoolGauge]] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.blue = ColourStats(Colour.BLUE)
        self.green = ColourStats(Colour.GREEN)
        self.colours: dict[Colour, ColourStats] = {Colour.BLUE: self.blue, Colour.GREEN: self.green}
        # Requests answered by the proxy before a colour was chosen (400, 408, 413, 431...).
        self.rejected: dict[int, int] = {}
        self.mirrors_sent = 0
        self.mirrors_dropped = 0
        self.mirrors_failed = 0
        # Lines the access-log writer dropped (the writer owns the count).
        self.access_log_dropped: Callable[[], int] = lambda: 0
        self._pools = pools
        self.registry.register(_ProxyCollector(self))

    def register(self, collector: Collector) -> None:
        """Add another collector (a later feature's metrics) to this registry."""
        self.registry.register(collector)

    def reject(self, status: int) -> None:
        """Count a request the proxy answered itself before routing it."""
        self.rejected[status] = self.rejected.get(status, 0) + 1

    def pool_gauges(self) -> list[PoolGauge]:
        """Current pool sizes (empty when no pools are attached)."""
        return list(self._pools()) if self._pools is not None else []


class _ProxyCollector(Collector):
    """Turns :class:`ProxyMetrics` counters into metric families at scrape time."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._m = metrics

    def describe(self) -> Iterator[Metric]:
        # Empty families with the same names: lets the registry detect clashes
        # without collecting (and without calling the pools callback).
        return iter(self._families(with_values=False))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(with_values=True))

    def _families(self, *, with_values: bool) -> list[Metric]:
        m = self._m
        requests = CounterMetricFamily(
            "bluegreen_requests",
            "Requests finished, by colour and status class (499 = client went away).",
            labels=["colour", "status_class"],
        )
        in_flight = GaugeMetricFamily(
            "bluegreen_requests_in_flight",
            "Requests routed to a colour and not finished yet (open websocket tunnels count).",
            labels=["colour"],
        )
        duration = HistogramMetricFamily(
            "bluegreen_request_duration_seconds",
            "Time from a request's complete head to the last byte of its response.",
            labels=["colour"],
        )
        connect_errors = CounterMetricFamily(
            "bluegreen_upstream_connect_errors",
            "Upstream connections refused, reset or unreachable.",
            labels=["colour"],
        )
        timeouts = CounterMetricFamily(
            "bluegreen_upstream_timeouts",
            "Upstream connect or read timeouts.",
            labels=["colour"],
        )
        waits = CounterMetricFamily(
            "bluegreen_upstream_pool_waits",
            "Requests that had to queue for a pooled upstream connection.",
            labels=["colour"],
        )
        rejections = CounterMetricFamily(
            "bluegreen_upstream_pool_rejections",
            "Requests answered 503 because the pool and its wait queue were full.",
            labels=["colour"],
        )
        retries = CounterMetricFamily(
            "bluegreen_upstream_retries",
            "Requests retried after a failed upstream connection, by the colour that failed.",
            labels=["colour"],
        )
        rejected = CounterMetricFamily(
            "bluegreen_requests_rejected",
            "Requests the proxy answered itself before routing (bad, too large, too slow).",
            labels=["status"],
        )
        mirrors = CounterMetricFamily(
            "bluegreen_mirror_requests",
            "Mirrored copies of requests sent to green, dropped (green busy) or failed.",
            labels=["result"],
        )
        pool_conns = GaugeMetricFamily(
            "bluegreen_upstream_connections",
            "Open upstream connections by server and state.",
            labels=["colour", "server", "state"],
        )
        pool_waiting = GaugeMetricFamily(
            "bluegreen_upstream_pool_waiting",
            "Requests waiting for a pooled upstream connection now.",
            labels=["colour", "server"],
        )
        log_dropped = CounterMetricFamily(
            "bluegreen_access_log_dropped_lines",
            "Access-log lines dropped because the log destination could not keep up.",
        )
        families: list[Metric] = [
            requests, in_flight, duration, connect_errors, timeouts, waits, rejections,
            retries, rejected, mirrors, pool_conns, pool_waiting, log_dropped,
        ]  # fmt: skip
        if not with_values:
            return families
        for stats in (m.blue, m.green):
            c = stats.colour.value
            for i, name in enumerate(STATUS_CLASSES, start=1):
                requests.add_metric([c, name], stats.by_class[i])
            in_flight.add_metric([c], stats.in_flight)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(DURATION_BUCKETS, stats.duration_counts, strict=False):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", cumulative + stats.duration_counts[-1]))
            duration.add_metric([c], buckets, stats.duration_sum)
            connect_errors.add_metric([c], stats.connect_errors)
            timeouts.add_metric([c], stats.timeouts)
            waits.add_metric([c], stats.pool_waits)
            rejections.add_metric([c], stats.pool_rejections)
            retries.add_metric([c], stats.retries)
        for status, count in sorted(m.rejected.items()):
            rejected.add_metric([str(status)], count)
        mirrors.add_metric(["sent"], m.mirrors_sent)
        mirrors.add_metric(["dropped"], m.mirrors_dropped)
        mirrors.add_metric(["failed"], m.mirrors_failed)
        for gauge in m.pool_gauges():
            c = gauge.colour.value
            pool_conns.add_metric([c, gauge.server, "idle"], gauge.idle)
            pool_conns.add_metric([c, gauge.server, "busy"], gauge.busy)
            pool_waiting.add_metric([c, gauge.server], gauge.waiting)
        log_dropped.add_metric([], m.access_log_dropped())
        return families


# --------------------------------------------------------------------------- rollouts

# Upper bounds (seconds) of the detection/fallback-time histograms; +Inf is implied.
DETECTION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True, slots=True)
class RolloutGaugeView:
    """Where the stored rollout is, read at scrape time (``step`` is 1-based, 0 when none)."""

    phase: str
    step: int
    target_ratio: float


class _SimpleHistogram:
    """Bucket counts (not cumulative, last = +Inf) and a sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DETECTION_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(DETECTION_BUCKETS, max(0.0, value))] += 1
        self.total += max(0.0, value)

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip(DETECTION_BUCKETS, self.counts, strict=False):
            cumulative += count
            out.append((repr(bound), cumulative))
        out.append(("+Inf", cumulative + self.counts[-1]))
        return out


class RolloutMetrics(Collector):
    """The rollout controller's metrics for one process.

    ``view`` reads the stored rollout (every replica reports the same phase);
    ``leading`` says whether this process leads. Counters and histograms
    count what *this* process did (the fallbacks it started, the detection
    times it measured), so summing them over replicas counts each once.
    """

    def __init__(
        self,
        phases: Iterable[str],
        view: Callable[[], RolloutGaugeView | None],
        leading: Callable[[], bool],
    ) -> None:
        self.phases = tuple(phases)
        self._view = view
        self._leading = leading
        self.rollbacks: dict[str, int] = {}
        self.detection = _SimpleHistogram()
        self.fallback = _SimpleHistogram()

    def rollback(self, reason: str) -> None:
        """Count a fallback (any reason: analysis, smoke, operator abort...)."""
        self.rollbacks[reason] = self.rollbacks.get(reason, 0) + 1

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(with_values=False))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(with_values=True))

    def _families(self, *, with_values: bool) -> list[Metric]:
        phase = GaugeMetricFamily(
            "bluegreen_rollout_phase",
            "1 for the phase the current rollout is in (idle when none was started).",
            labels=["phase"],
        )
        step = GaugeMetricFamily(
            "bluegreen_rollout_step", "Current ramp step of the rollout, 1-based (0 when none)."
        )
        target = GaugeMetricFamily(
            "bluegreen_rollout_target_weight_ratio",
            "Share of traffic the rollout asks for its new colour (0..1).",
        )
        leader = GaugeMetricFamily(
            "bluegreen_rollout_leader", "1 when this process leads the rollout controller."
        )
        rollbacks = CounterMetricFamily(
            "bluegreen_rollbacks",
            "Rollouts this process sent back to the old colour, by reason.",
            labels=["reason"],
        )
        detection = HistogramMetricFamily(
            "bluegreen_rollout_detection_seconds",
            "From the first failing measurement of the new colour to the decision to fall back.",
        )
        fallback = HistogramMetricFamily(
            "bluegreen_rollout_fallback_seconds",
            "From the first failing measurement of the new colour to 0 % on every replica.",
        )
        families: list[Metric] = [phase, step, target, leader, rollbacks, detection, fallback]
        if not with_values:
            return families
        view = self._view()
        current = view.phase if view is not None else "idle"
        for name in self.phases:
            phase.add_metric([name], 1.0 if name == current else 0.0)
        step.add_metric([], float(view.step) if view is not None else 0.0)
        target.add_metric([], view.target_ratio if view is not None else 0.0)
        leader.add_metric([], 1.0 if self._leading() else 0.0)
        for reason, count in sorted(self.rollbacks.items()):
            rollbacks.add_metric([reason], count)
        detection.add_metric([], self.detection.buckets(), self.detection.total)
        fallback.add_metric([], self.fallback.buckets(), self.fallback.total)
        return families
