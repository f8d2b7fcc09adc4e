"""Properties of health analysis (hypothesis)."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from bluegreen.health.analysis import (
    AnalysisConfig,
    Counters,
    Histogram,
    Status,
    WindowStats,
    assess,
    combine,
    is_worse,
    window,
)
from bluegreen.health.probe_state import ProbeSummary

BOUNDS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, math.inf)

histograms = st.lists(st.integers(0, 500), min_size=len(BOUNDS), max_size=len(BOUNDS)).map(
    lambda counts: Histogram(BOUNDS, tuple(counts))
)


@st.composite
def windows(draw: st.DrawFn) -> WindowStats:
    requests = draw(st.integers(0, 5000))
    e5, ce, to = (draw(st.integers(0, requests)) for _ in range(3))
    # keep failures <= requests, as a consistent proxy reports them
    ce = min(ce, requests - e5)
    to = min(to, requests - e5 - ce)
    latency = draw(st.one_of(st.none(), histograms))
    return WindowStats(requests, e5, ce, to, latency)


configs = st.builds(
    AnalysisConfig,
    min_requests=st.integers(1, 500),
    max_error_rate=st.floats(0, 1),
    error_rate_margin=st.floats(0, 1),
    p99_factor=st.floats(1, 10),
    p99_floor_seconds=st.floats(0, 2),
    max_p99_seconds=st.one_of(st.none(), st.floats(0, 10)),
)


@st.composite
def probes(draw: st.DrawFn) -> ProbeSummary:
    servers = draw(st.integers(0, 5))
    return ProbeSummary(servers, draw(st.integers(0, servers)))


@settings(max_examples=250, deadline=None)
@given(windows(), configs, st.one_of(st.none(), probes()))
def test_identical_candidate_and_baseline_never_fail(
    w: WindowStats, cfg: AnalysisConfig, p: ProbeSummary | None
) -> None:
    verdict = assess(w, w, cfg, candidate_probes=p, baseline_probes=p)
    assert verdict.status is not Status.FAILING, verdict.message


@settings(max_examples=250, deadline=None)
@given(
    windows(),
    windows(),
    configs,
    st.integers(1, 100),
    st.sampled_from(["5xx", "connect", "timeout"]),
)
def test_turning_candidate_successes_into_failures_never_improves_the_verdict(
    cand: WindowStats, base: WindowStats, cfg: AnalysisConfig, n: int, kind: str
) -> None:
    n = min(n, cand.requests - cand.failures)
    field = {"5xx": "errors_5xx", "connect": "connect_errors", "timeout": "timeouts"}[kind]
    worse = replace(cand, **{field: getattr(cand, field) + n})
    before = assess(cand, base, cfg).status
    after = assess(worse, base, cfg).status
    assert not is_worse(after, before), (before, after)


@settings(max_examples=300, deadline=None)
@given(windows(), windows(), configs, st.integers(1, 100))
def test_adding_failed_requests_never_clears_a_failure(
    cand: WindowStats, base: WindowStats, cfg: AnalysisConfig, n: int
) -> None:
    if assess(cand, base, cfg).status is not Status.FAILING:
        return
    worse = replace(cand, requests=cand.requests + n, errors_5xx=cand.errors_5xx + n)
    assert assess(worse, base, cfg).status is Status.FAILING


@settings(max_examples=300, deadline=None)
@given(histograms, st.floats(0, 1), st.floats(0, 1))
def test_quantiles_grow_with_q_and_stay_within_the_finite_bounds(
    h: Histogram, q1: float, q2: float
) -> None:
    lo, hi = sorted((q1, q2))
    a, b = h.quantile(lo), h.quantile(hi)
    if h.total == 0:
        assert a is None
        assert b is None
        return
    assert a is not None
    assert b is not None
    assert 0 <= a <= b + 1e-12
    assert b <= max(x for x in BOUNDS if math.isfinite(x))


@settings(max_examples=200, deadline=None)
@given(windows(), windows())
def test_window_of_a_snapshot_and_its_successor_is_the_traffic_in_between(
    first: WindowStats, between: WindowStats
) -> None:
    both_hist = first.latency is not None and between.latency is not None
    before = Counters(
        first.requests, first.errors_5xx, first.connect_errors, first.timeouts, first.latency
    )
    total = first + between
    after = Counters(
        total.requests,
        total.errors_5xx,
        total.connect_errors,
        total.timeouts,
        total.latency if both_hist else None,
    )
    if not both_hist:
        before = replace(before, latency=None)
    expected = replace(between, latency=between.latency if both_hist else None)
    assert window(before, after) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(windows(), max_size=5))
def test_combining_replica_windows_does_not_depend_on_order(ws: list[WindowStats]) -> None:
    a, b = combine(ws), combine(reversed(ws))
    assert (a.requests, a.failures) == (b.requests, b.failures)
    assert a.latency == b.latency
