"""Health analysis: per-colour window statistics -> a Verdict. Pure.

No I/O, clock or randomness: the runner passes in counters, probe summaries
and times. Like Argo Rollouts' ``assessMetricStatus``, one function
(:func:`assess`) maps one measurement to a :class:`Verdict`, and a separate
accumulator (:class:`AnalysisRun`) decides when verdicts add up to a failed
rollout, so one noisy window never rolls anything back.

Theory of operation
-------------------
The proxy exposes *cumulative* per-colour counters (requests, 5xx, connect
errors, timeouts) and latency histogram bucket counts. The runner snapshots
them every few seconds on every replica; :func:`window` turns two snapshots
into the traffic in between (a counter that went down means the proxy
restarted; then the newer snapshot *is* the window, as Prometheus' ``rate``
treats resets), and :meth:`WindowStats.__add__` sums replicas.

:func:`assess` compares the *candidate* (the colour being rolled out) with the
*baseline* (the live colour) over the **same window**, as Kayenta does,
checking in this order and stopping at the first verdict:

1. **Probes.** The candidate fails if a larger share of its servers fails
   active probes than the baseline's. Without a probed baseline, it fails
   only if all its servers are down.
2. **Limit.** The baseline is *comparable* when it served ``min_requests``
   in the window (it does not at 100 %). The error limit is then
   ``baseline rate + error_rate_margin``; otherwise the absolute
   ``max_error_rate``. Failures = 5xx + connect errors + timeouts.
3. **Errors.** The candidate fails if it is *conclusively* over the limit:
   its rate is above it, or, with fewer than ``min_requests``, its failures
   exceed the limit *even if the rest of the minimum sample succeeded*
   (``failures > limit * min_requests``) — a fast, statistically safe early
   failure at low traffic.
4. **Sample.** Otherwise fewer than ``min_requests`` is inconclusive.
5. **Latency.** With a comparable baseline the candidate fails if its p99 is
   above ``p99_factor`` times the baseline's *and* above ``p99_floor_seconds``
   (2 ms vs 1 ms is noise, not a regression). Without one, only the optional
   absolute ``max_p99_seconds`` applies.
6. **Both failing.** When the baseline is itself conclusively over the
   absolute limit and the candidate is no worse, the verdict is
   inconclusive (``baseline_failing``), not failing: the cause is something
   both colours share, and moving traffic would not help.

Identical candidate and baseline statistics therefore never fail, and turning
a candidate success into a failure never improves the verdict (both are
property-tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from bluegreen.health.probe_state import ProbeSummary
from bluegreen.routing import Colour


class Status(StrEnum):
    """What one measurement says about the candidate (Argo's measurement phases)."""

    HEALTHY = "healthy"
    INCONCLUSIVE = "inconclusive"
    FAILING = "failing"


_SEVERITY: Final = {Status.HEALTHY: 0, Status.INCONCLUSIVE: 1, Status.FAILING: 2}


def is_worse(a: Status, b: Status) -> bool:
    """True if ``b`` is a worse status than ``a`` (healthy < inconclusive < failing)."""
    return _SEVERITY[b] > _SEVERITY[a]


class VerdictReason(StrEnum):
    """Why a verdict came out as it did; also the rollback reason for analysis failures."""

    WITHIN_LIMITS = "within_limits"
    NOT_ENOUGH_DATA = "not_enough_data"
    BASELINE_FAILING = "baseline_failing"
    PROBE_FAILED = "probe_failed"
    ERROR_RATE = "error_rate"
    ERROR_RATE_VS_BASELINE = "error_rate_above_baseline"
    LATENCY = "latency_p99"
    LATENCY_VS_BASELINE = "latency_p99_above_baseline"
    MEASUREMENT_ERROR = "measurement_error"


# --------------------------------------------------------------------------- histograms


@dataclass(frozen=True, slots=True)
class Histogram:
    """Latency histogram: ``counts[i]`` observations in ``(bounds[i-1], bounds[i]]`` seconds.

    Counts are per bucket (not cumulative). The last bound may be ``inf``.
    Use :meth:`from_cumulative` for Prometheus-style ``le`` buckets.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.bounds or len(self.bounds) != len(self.counts):
            raise ValueError(
                f"histogram needs one count per bound, got {len(self.bounds)} bounds "
                f"and {len(self.counts)} counts"
            )
        if any(math.isnan(b) or b < 0 for b in self.bounds) or any(
            b2 <= b1 for b1, b2 in zip(self.bounds, self.bounds[1:], strict=False)
        ):
            raise ValueError(f"histogram bounds must be >= 0 and increasing: {self.bounds}")
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.counts):
            raise ValueError(f"histogram counts must be integers >= 0: {self.counts}")

    @classmethod
    def from_cumulative(cls, bounds: Iterable[float], cumulative: Iterable[int]) -> Histogram:
        """Build from Prometheus ``le`` buckets (each count includes the smaller buckets)."""
        b, cum = tuple(bounds), tuple(cumulative)
        if len(b) != len(cum):
            raise ValueError(f"{len(b)} bounds but {len(cum)} cumulative counts")
        counts = tuple(c - p for p, c in zip((0, *cum), cum, strict=False))
        if any(c < 0 for c in counts):
            raise ValueError(f"cumulative bucket counts must not decrease: {cum}")
        return cls(b, counts)

    @property
    def total(self) -> int:
        """Number of observations."""
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q`` quantile in seconds (None without observations).

        Linear interpolation inside the bucket, as PromQL's
        ``histogram_quantile``; a quantile in the ``+Inf`` bucket is reported as
        the largest finite bound (we only know it is at least that).
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within 0..1, got {q}")
        total = self.total
        if total == 0:
            return None
        rank = q * total
        cumulative = 0
        for i, (upper, count) in enumerate(zip(self.bounds, self.counts, strict=True)):
            if cumulative + count >= rank and count > 0:
                lower = self.bounds[i - 1] if i > 0 else 0.0
                if math.isinf(upper):
                    return lower
                return lower + (upper - lower) * (rank - cumulative) / count
            cumulative += count
        # Only reachable for q == 0 with leading empty buckets handled above.
        return 0.0  # pragma: no cover

    def _check_same_bounds(self, other: Histogram) -> None:
        if self.bounds != other.bounds:
            raise ValueError(
                f"histograms have different buckets: {self.bounds} vs {other.bounds}; "
                "every proxy replica must use the same latency buckets"
            )

    def __add__(self, other: Histogram) -> Histogram:
        self._check_same_bounds(other)
        return Histogram(
            self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        )

    def minus(self, earlier: Histogram) -> Histogram | None:
        """Observations since ``earlier``; None if a bucket went down (a counter reset)."""
        self._check_same_bounds(earlier)
        delta = tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True))
        return None if any(d < 0 for d in delta) else Histogram(self.bounds, delta)


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative per-colour counters of one proxy replica, as it exposes them.

    ``requests`` counts every request sent to the colour, failed or not; a
    failed request is counted in exactly one of ``errors_5xx`` (the upstream
    answered 5xx), ``connect_errors`` or ``timeouts``.
    """

    requests: int = 0
    errors_5xx: int = 0
    connect_errors: int = 0
    timeouts: int = 0
    latency: Histogram | None = None

    def __post_init__(self) -> None:
        _check_counts(self.requests, self.errors_5xx, self.connect_errors, self.timeouts)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What one colour served during one window (all replicas together).

    Latency comes from the histogram, or from explicit quantiles when the
    source reports them directly (these win over the histogram).
    """

    requests: int = 0
    errors_5xx: int = 0
    connect_errors: int = 0
    timeouts: int = 0
    latency: Histogram | None = None
    p50_seconds: float | None = None
    p99_seconds: float | None = None

    def __post_init__(self) -> None:
        _check_counts(self.requests, self.errors_5xx, self.connect_errors, self.timeouts)
        for name in ("p50_seconds", "p99_seconds"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    @property
    def failures(self) -> int:
        """5xx answers + connect errors + timeouts."""
        return self.errors_5xx + self.connect_errors + self.timeouts

    @property
    def error_rate(self) -> float:
        """Failures per request (0.0 without requests, never above 1.0)."""
        if self.requests == 0:
            return 0.0
        return min(1.0, self.failures / self.requests)

    @property
    def p50(self) -> float | None:
        """Median latency in seconds, if known."""
        if self.p50_seconds is not None:
            return self.p50_seconds
        return self.latency.quantile(0.5) if self.latency is not None else None

    @property
    def p99(self) -> float | None:
        """99th percentile latency in seconds, if known."""
        if self.p99_seconds is not None:
            return self.p99_seconds
        return self.latency.quantile(0.99) if self.latency is not None else None

    def __add__(self, other: WindowStats) -> WindowStats:
        """Sum two replicas' windows (explicit quantiles cannot be summed and are dropped)."""
        if self.latency is None:
            latency = other.latency
        elif other.latency is None:
            latency = self.latency
        else:
            latency = self.latency + other.latency
        return WindowStats(
            requests=self.requests + other.requests,
            errors_5xx=self.errors_5xx + other.errors_5xx,
            connect_errors=self.connect_errors + other.connect_errors,
            timeouts=self.timeouts + other.timeouts,
            latency=latency,
        )


def _check_counts(*values: int) -> None:
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"counters must be integers >= 0, got {values}")


def window(before: Counters, after: Counters) -> WindowStats:
    """The traffic between two cumulative snapshots of the same replica.

    If any counter went down, the proxy restarted and its counters began
    again at zero: the window is then everything in ``after``.
    """
    latency: Histogram | None = None
    reset = (
        after.requests < before.requests
        or after.errors_5xx < before.errors_5xx
        or after.connect_errors < before.connect_errors
        or after.timeouts < before.timeouts
    )
    if after.latency is not None and before.latency is not None:
        latency = after.latency.minus(before.latency)
        reset = reset or latency is None
    if reset:
        return WindowStats(
            after.requests, after.errors_5xx, after.connect_errors, after.timeouts, after.latency
        )
    # With a histogram in only one snapshot, the window's latency is unknown (None).
    return WindowStats(
        requests=after.requests - before.requests,
        errors_5xx=after.errors_5xx - before.errors_5xx,
        connect_errors=after.connect_errors - before.connect_errors,
        timeouts=after.timeouts - before.timeouts,
        latency=latency,
    )


def combine(windows: Iterable[WindowStats]) -> WindowStats:
    """Sum the windows of several proxy replicas (empty input gives an empty window)."""
    total = WindowStats()
    for w in windows:
        total = total + w
    return total


# --------------------------------------------------------------------------- verdicts


class InconclusivePolicy(StrEnum):
    """What a run of inconclusive verdicts does to the rollout."""

    PAUSE = "pause"  # hold the rollout for an operator (Argo Rollouts)
    FAIL = "fail"  # treat as a failure (Flagger)


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """Explicit limits for health analysis. Rates are fractions (0.05 = 5 %)."""

    min_requests: int = 50
    max_error_rate: float = 0.05
    error_rate_margin: float = 0.01
    p99_factor: float = 1.5
    p99_floor_seconds: float = 0.05
    max_p99_seconds: float | None = None
    consecutive_failure_limit: int = 2
    failure_limit: int | None = None
    consecutive_error_limit: int = 5
    inconclusive_limit: int | None = None
    on_inconclusive: InconclusivePolicy = InconclusivePolicy.PAUSE

    def __post_init__(self) -> None:
        _positive_int("min_requests", self.min_requests)
        _positive_int("consecutive_failure_limit", self.consecutive_failure_limit)
        _positive_int("consecutive_error_limit", self.consecutive_error_limit)
        for name in ("failure_limit", "inconclusive_limit"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("max_error_rate", "error_rate_margin"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a fraction within 0..1, got {value!r}")
        if not (math.isfinite(self.p99_factor) and self.p99_factor >= 1.0):
            raise ValueError(f"p99_factor must be >= 1 (1.5 = 50 % slower), got {self.p99_factor}")
        for name in ("p99_floor_seconds", "max_p99_seconds"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One measurement's outcome, with the numbers it was based on."""

    status: Status
    reason: VerdictReason
    message: str
    candidate_error_rate: float | None = None
    baseline_error_rate: float | None = None
    candidate_p99: float | None = None
    baseline_p99: float | None = None
    compared: bool = False  # True when the baseline had enough traffic to compare with


def _pct(rate: float) -> str:
    return f"{rate * 100:.2f} %"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _rate_detail(w: WindowStats) -> str:
    return (
        f"{w.failures}/{w.requests}: {w.errors_5xx} 5xx, {w.connect_errors} connect errors, "
        f"{w.timeouts} timeouts"
    )


def assess(
    candidate: WindowStats,
    baseline: WindowStats,
    config: AnalysisConfig,
    *,
    candidate_probes: ProbeSummary | None = None,
    baseline_probes: ProbeSummary | None = None,
    candidate_colour: Colour = Colour.GREEN,
) -> Verdict:
    """Judge the candidate colour over one window, compared with the baseline.

    Both windows must cover the same period. See the module docstring for the
    order of checks.
    """
    cand, base = str(candidate_colour), str(candidate_colour.other)
    min_req = config.min_requests

    # 1. Active probes: no traffic needed.
    if candidate_probes is not None and candidate_probes.unhealthy:
        cp = candidate_probes
        if baseline_probes is not None and baseline_probes.servers:
            bp = baseline_probes
            if cp.unhealthy_fraction > bp.unhealthy_fraction:
                return Verdict(
                    Status.FAILING,
                    VerdictReason.PROBE_FAILED,
                    f"{cand}: {cp.unhealthy}/{cp.servers} servers failing active probes, "
                    f"{base}: {bp.unhealthy}/{bp.servers}",
                )
        elif cp.all_unhealthy:
            return Verdict(
                Status.FAILING,
                VerdictReason.PROBE_FAILED,
                f"{cand}: all {cp.servers} servers failing active probes",
            )

    # 2. Which error limit applies?
    compared = baseline.requests >= min_req
    c_rate, b_rate = candidate.error_rate, baseline.error_rate
    max_rate = config.max_error_rate
    if compared:
        limit = min(1.0, b_rate + config.error_rate_margin)
        limit_text = (
            f"{base} {_pct(b_rate)} ({_rate_detail(baseline)}) + margin "
            f"{_pct(config.error_rate_margin)}"
        )
        error_reason = VerdictReason.ERROR_RATE_VS_BASELINE
    else:
        limit = max_rate
        limit_text = (
            f"the {_pct(limit)} limit ({base} served {baseline.requests} requests, "
            f"fewer than {min_req}: absolute limits apply)"
        )
        error_reason = VerdictReason.ERROR_RATE

    def verdict(status: Status, reason: VerdictReason, message: str) -> Verdict:
        return Verdict(
            status,
            reason,
            message,
            candidate_error_rate=c_rate if candidate.requests else None,
            baseline_error_rate=b_rate if baseline.requests else None,
            candidate_p99=candidate.p99,
            baseline_p99=baseline.p99,
            compared=compared,
        )

    # Over the limit, conclusively: with a small sample, even if the rest of the
    # minimum sample succeeded. The same test tells whether the baseline is
    # itself conclusively over the absolute limit.
    small = candidate.requests < min_req
    over = candidate.failures > limit * min_req if small else c_rate > limit
    baseline_over = baseline.failures > max_rate * max(min_req, baseline.requests)
    both_failing = (
        f"{cand} {_pct(c_rate)} ({_rate_detail(candidate)}) and {base} {_pct(b_rate)} "
        f"({_rate_detail(baseline)}) both fail above the {_pct(max_rate)} limit: "
        "the new version is not the cause. Check what both colours share (database, network)"
    )
    # Without a comparable baseline, a baseline failing at least as much excuses
    # the candidate: falling back would not help.
    excused = over and not compared and baseline_over and c_rate <= b_rate

    # 3. Errors.
    if over and not excused:
        if small:
            message = (
                f"{cand}: {candidate.failures} failed of {candidate.requests} requests "
                f"({_rate_detail(candidate)}); even if the rest of the {min_req}-request "
                f"minimum sample succeeded the error rate would exceed {limit_text}"
            )
        else:
            message = (
                f"{cand} error rate {_pct(c_rate)} ({_rate_detail(candidate)}) is above "
                f"{limit_text}"
            )
        return verdict(Status.FAILING, error_reason, message)

    # 4. Sample size.
    if small:
        if excused:
            return verdict(Status.INCONCLUSIVE, VerdictReason.BASELINE_FAILING, both_failing)
        return verdict(
            Status.INCONCLUSIVE,
            VerdictReason.NOT_ENOUGH_DATA,
            f"{cand} served {candidate.requests} requests in the window; "
            f"at least {min_req} are needed to judge it",
        )

    # 5. Latency.
    c_p99, b_p99 = candidate.p99, baseline.p99
    if compared and c_p99 is not None and b_p99 is not None:
        if c_p99 > config.p99_floor_seconds and c_p99 > b_p99 * config.p99_factor:
            return verdict(
                Status.FAILING,
                VerdictReason.LATENCY_VS_BASELINE,
                f"{cand} p99 {_ms(c_p99)} is above {config.p99_factor:g} x {base}'s "
                f"{_ms(b_p99)} (floor {_ms(config.p99_floor_seconds)})",
            )
    elif (
        not compared
        and c_p99 is not None
        and config.max_p99_seconds is not None
        and c_p99 > config.max_p99_seconds
        and not (b_p99 is not None and b_p99 >= c_p99)  # the baseline is as slow
    ):
        return verdict(
            Status.FAILING,
            VerdictReason.LATENCY,
            f"{cand} p99 {_ms(c_p99)} is above the {_ms(config.max_p99_seconds)} limit "
            f"({base} served {baseline.requests} requests: absolute limits apply)",
        )

    # 6. Both colours failing alike is not a verdict on the new version.
    if excused or (compared and c_rate > max_rate and baseline_over):
        return verdict(Status.INCONCLUSIVE, VerdictReason.BASELINE_FAILING, both_failing)

    p99_text = f", p99 {_ms(c_p99)}" if c_p99 is not None else ""
    against = f"{base} {_pct(b_rate)}" if compared else f"absolute limit {_pct(max_rate)}"
    return verdict(
        Status.HEALTHY,
        VerdictReason.WITHIN_LIMITS,
        f"{cand} error rate {_pct(c_rate)} over {candidate.requests} requests{p99_text} "
        f"(against {against})",
    )


# --------------------------------------------------------------------------- the run


class RunPhase(StrEnum):
    """Whether the analysis is still watching or has failed the rollout."""

    RUNNING = "running"
    FAILED = "failed"


class Decision(StrEnum):
    """What the runner must tell the rollout controller after one observation."""

    CONTINUE = "continue"  # nothing to report
    FAIL = "fail"  # send AnalysisFailed(run.reason, run.message, run.failing_since)
    PAUSE = "pause"  # send AnalysisInconclusive(run.reason, run.message)


@dataclass(frozen=True, slots=True)
class AnalysisRun:
    """Counts verdicts over one rollout and decides when they add up to a failure.

    * ``consecutive_failure_limit`` failing verdicts in a row (a healthy one
      breaks the run; an inconclusive one does not) fail the run;
    * ``failure_limit`` failing verdicts in total, if set, fail it too;
    * ``consecutive_error_limit`` measurements in a row that could not be
      taken at all (metrics unreachable) fail it with ``measurement_error``;
    * ``inconclusive_limit`` inconclusive verdicts in a row, if set, pause the
      rollout or fail it (``on_inconclusive``); the count restarts after
      each pause request.

    Once failed the run ignores further observations.
    """

    config: AnalysisConfig
    phase: RunPhase = RunPhase.RUNNING
    healthy: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_failed: int = 0
    consecutive_inconclusive: int = 0
    consecutive_errors: int = 0
    failing_since: float | None = None  # first failing verdict of the current run of failures
    last: Verdict | None = None
    reason: VerdictReason | None = None  # set with the FAIL or PAUSE decision
    message: str = ""

    @property
    def measurements(self) -> int:
        """Number of observations so far, errors included."""
        return self.healthy + self.failed + self.inconclusive + self.errors

    def observe(self, verdict: Verdict, *, at: float) -> tuple[AnalysisRun, Decision]:
        """Add one verdict taken at ``at``; return the new run and what to do."""
        if self.phase is RunPhase.FAILED:
            return self, Decision.CONTINUE
        cfg = self.config
        if verdict.status is Status.HEALTHY:
            return replace(
                self,
                healthy=self.healthy + 1,
                consecutive_failed=0,
                consecutive_inconclusive=0,
                consecutive_errors=0,
                failing_since=None,
                last=verdict,
            ), Decision.CONTINUE
        if verdict.status is Status.FAILING:
            run = replace(
                self,
                failed=self.failed + 1,
                consecutive_failed=self.consecutive_failed + 1,
                consecutive_inconclusive=0,
                consecutive_errors=0,
                failing_since=self.failing_since if self.failing_since is not None else at,
                last=verdict,
            )
            if run.consecutive_failed >= cfg.consecutive_failure_limit:
                why = f"{run.consecutive_failed} consecutive failing windows"
            elif cfg.failure_limit is not None and run.failed >= cfg.failure_limit:
                why = f"{run.failed} failing windows (failure limit {cfg.failure_limit})"
            else:
                return run, Decision.CONTINUE
            return replace(
                run,
                phase=RunPhase.FAILED,
                reason=verdict.reason,
                message=f"{why}: {verdict.message}",
            ), Decision.FAIL
        run = replace(
            self,
            inconclusive=self.inconclusive + 1,
            consecutive_inconclusive=self.consecutive_inconclusive + 1,
            consecutive_errors=0,
            last=verdict,
        )
        limit = cfg.inconclusive_limit
        if limit is None or run.consecutive_inconclusive < limit:
            return run, Decision.CONTINUE
        message = f"{run.consecutive_inconclusive} inconclusive windows in a row: {verdict.message}"
        if cfg.on_inconclusive is InconclusivePolicy.FAIL:
            return replace(
                run, phase=RunPhase.FAILED, reason=verdict.reason, message=message
            ), Decision.FAIL
        return replace(
            run, consecutive_inconclusive=0, reason=verdict.reason, message=message
        ), Decision.PAUSE

    def observe_error(self, detail: str, *, at: float) -> tuple[AnalysisRun, Decision]:
        """Record a measurement that could not be taken (e.g. metrics unreachable)."""
        if self.phase is RunPhase.FAILED:
            return self, Decision.CONTINUE
        run = replace(self, errors=self.errors + 1, consecutive_errors=self.consecutive_errors + 1)
        if run.consecutive_errors < self.config.consecutive_error_limit:
            return run, Decision.CONTINUE
        return replace(
            run,
            phase=RunPhase.FAILED,
            reason=VerdictReason.MEASUREMENT_ERROR,
            failing_since=run.failing_since if run.failing_since is not None else at,
            message=f"{run.consecutive_errors} measurements in a row could not be taken: {detail}",
        ), Decision.FAIL
