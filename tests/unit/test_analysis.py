"""Health analysis: one test per branch of assess(), the histogram, windows and the run."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bluegreen.health.analysis import (
    AnalysisConfig,
    AnalysisRun,
    Counters,
    Decision,
    Histogram,
    InconclusivePolicy,
    RunPhase,
    Status,
    Verdict,
    VerdictReason,
    WindowStats,
    assess,
    combine,
    is_worse,
    window,
)
from bluegreen.health.probe_state import ProbeSummary
from bluegreen.routing import Colour

CFG = AnalysisConfig(
    min_requests=100,
    max_error_rate=0.05,
    error_rate_margin=0.01,
    p99_factor=1.5,
    p99_floor_seconds=0.05,
)
BOUNDS = (0.01, 0.05, 0.1, 0.5, 1.0, math.inf)


def stats(requests: int = 1000, errors: int = 0, **kw: object) -> WindowStats:
    return WindowStats(requests=requests, errors_5xx=errors, **kw)  # type: ignore[arg-type]


def p99(seconds: float) -> WindowStats:
    return stats(p99_seconds=seconds)


HEALTHY_BLUE = stats(1000, 1)

# --------------------------------------------------------------------------- probes


def test_more_candidate_servers_failing_probes_than_baseline_fails() -> None:
    v = assess(
        stats(),
        HEALTHY_BLUE,
        CFG,
        candidate_probes=ProbeSummary(3, 1),
        baseline_probes=ProbeSummary(3, 0),
    )
    assert (v.status, v.reason) == (Status.FAILING, VerdictReason.PROBE_FAILED)
    assert v.message == "green: 1/3 servers failing active probes, blue: 0/3"


def test_probe_failures_shared_with_the_baseline_are_not_the_candidates_fault() -> None:
    v = assess(
        stats(),
        HEALTHY_BLUE,
        CFG,
        candidate_probes=ProbeSummary(2, 1),
        baseline_probes=ProbeSummary(4, 2),
    )
    assert v.status is Status.HEALTHY


def test_without_a_probed_baseline_all_candidate_servers_down_fails() -> None:
    v = assess(stats(), HEALTHY_BLUE, CFG, candidate_probes=ProbeSummary(2, 2))
    assert (v.status, v.reason) == (Status.FAILING, VerdictReason.PROBE_FAILED)
    assert v.message == "green: all 2 servers failing active probes"


def test_without_a_probed_baseline_some_candidate_servers_down_is_tolerated() -> None:
    v = assess(
        stats(),
        HEALTHY_BLUE,
        CFG,
        candidate_probes=ProbeSummary(3, 1),
        baseline_probes=ProbeSummary(0, 0),
    )
    assert v.status is Status.HEALTHY


# --------------------------------------------------------------------------- sample size


def test_too_few_candidate_requests_is_inconclusive() -> None:
    v = assess(stats(40, 1), HEALTHY_BLUE, CFG)
    assert (v.status, v.reason) == (Status.INCONCLUSIVE, VerdictReason.NOT_ENOUGH_DATA)
    assert (
        v.message == "green served 40 requests in the window; at least 100 are needed to judge it"
    )


def test_a_small_sample_already_past_the_limit_fails_early() -> None:
    # blue 0.1 % + 1 % margin = 1.1 % of a 100-request sample = 1.1 failures: 2 exceed it
    v = assess(stats(10, 2), HEALTHY_BLUE, CFG)
    assert (v.status, v.reason) == (Status.FAILING, VerdictReason.ERROR_RATE_VS_BASELINE)
    assert "even if the rest of the 100-request minimum sample succeeded" in v.message


def test_a_small_sample_against_the_absolute_limit_fails_early() -> None:
    v = assess(stats(20, 6), stats(0), CFG)  # 6 > 5 % of 100
    assert (v.status, v.reason) == (Status.FAILING, VerdictReason.ERROR_RATE)


def test_a_small_sample_at_exactly_the_limit_is_still_inconclusive() -> None:
    v = assess(stats(20, 5), stats(0), CFG)  # 5 failures = 5 % of 100: not above
    assert v.status is Status.INCONCLUSIVE


# --------------------------------------------------------------------------- error rate


def test_error_rate_above_baseline_plus_margin_fails() -> None:
    v = assess(stats(1000, 30), stats(1000, 5), CFG)  # 3 % vs 0.5 % + 1 %
    assert (v.status, v.reason, v.compared) == (
        Status.FAILING,
        VerdictReason.ERROR_RATE_VS_BASELINE,
        True,
    )
    assert v.message == (
        "green error rate 3.00 % (30/1000: 30 5xx, 0 connect errors, 0 timeouts) is above "
        "blue 0.50 % (5/1000: 5 5xx, 0 connect errors, 0 timeouts) + margin 1.00 %"
    )
    assert (v.candidate_error_rate, v.baseline_error_rate) == (0.03, 0.005)


def test_error_rate_within_the_margin_of_the_baseline_passes() -> None:
    v = assess(stats(1000, 14), stats(1000, 5), CFG)  # 1.4 % <= 1.5 %
    assert (v.status, v.reason) == (Status.HEALTHY, VerdictReason.WITHIN_LIMITS)


def test_both_colours_failing_alike_is_inconclusive_not_the_versions_fault() -> None:
    # Both at 20 %: a shared dependency is down; moving traffic would not help.
    v = assess(stats(1000, 200), stats(1000, 200), CFG)
    assert (v.status, v.reason) == (Status.INCONCLUSIVE, VerdictReason.BASELINE_FAILING)
    assert "both fail above the 5.00 % limit: the new version is not the cause" in v.message


def test_a_baseline_over_the_absolute_limit_does_not_matter_if_the_candidate_is_fine() -> None:
    v = assess(stats(1000, 10), stats(1000, 200), CFG)
    assert v.status is Status.HEALTHY


def test_a_small_baseline_failing_conclusively_excuses_a_candidate_no_worse() -> None:
    # 50/50 at very low traffic, both colours failing every request
    v = assess(stats(20, 20), stats(20, 20), CFG)
    assert (v.status, v.reason) == (Status.INCONCLUSIVE, VerdictReason.BASELINE_FAILING)


def test_a_small_baseline_failing_conclusively_does_not_excuse_a_worse_candidate() -> None:
    v = assess(stats(1000, 900), stats(20, 10), CFG)  # 90 % vs 50 %
    assert (v.status, v.reason) == (Status.FAILING, VerdictReason.ERROR_RATE)


def test_a_small_baseline_with_a_few_errors_excuses_nothing() -> None:
    v = assess(stats(1000, 900), stats(20, 20), replace(CFG, min_requests=1000))
    # blue: 20 failures are not more than 5 % of 1000: not conclusive
    assert (v.status, v.reason) == (Status.FAILING, VerdictReason.ERROR_RATE)


def test_without_a_comparable_baseline_the_absolute_limit_applies() -> None:
    v = assess(stats(1000, 60), stats(10, 0), CFG)  # green at 100 %: blue idle
    assert (v.status, v.reason, v.compared) == (Status.FAILING, VerdictReason.ERROR_RATE, False)
    assert "above the 5.00 % limit (blue served 10 requests, fewer than 100" in v.message


def test_without_a_comparable_baseline_under_the_absolute_limit_passes() -> None:
    v = assess(stats(1000, 40), stats(10, 0), CFG)
    assert (v.status, v.compared) == (Status.HEALTHY, False)
    assert "against absolute limit 5.00 %" in v.message


def test_connect_errors_and_timeouts_count_as_failures() -> None:
    v = assess(
        WindowStats(requests=1000, errors_5xx=10, connect_errors=15, timeouts=5),
        stats(1000, 0),
        CFG,
    )
    assert v.status is Status.FAILING
    assert "30/1000: 10 5xx, 15 connect errors, 5 timeouts" in v.message


def test_error_rate_never_exceeds_one() -> None:
    w = WindowStats(requests=10, errors_5xx=8, connect_errors=8)
    assert w.error_rate == 1.0


def test_messages_follow_the_candidate_colour() -> None:
    v = assess(stats(1000, 30), stats(1000, 0), CFG, candidate_colour=Colour.BLUE)
    assert v.message.startswith("blue error rate 3.00 %")
    assert "is above green 0.00 %" in v.message


# --------------------------------------------------------------------------- latency


def test_p99_above_factor_times_baseline_and_above_floor_fails() -> None:
    v = assess(p99(0.4), p99(0.2), CFG)
    assert (v.status, v.reason) == (Status.FAILING, VerdictReason.LATENCY_VS_BASELINE)
    assert v.message == "green p99 400 ms is above 1.5 x blue's 200 ms (floor 50 ms)"
    assert (v.candidate_p99, v.baseline_p99) == (0.4, 0.2)


def test_p99_regression_below_the_floor_is_ignored() -> None:
    v = assess(p99(0.04), p99(0.005), CFG)  # 8x slower, but 40 ms
    assert v.status is Status.HEALTHY


def test_p99_within_the_factor_passes() -> None:
    v = assess(p99(0.29), p99(0.2), CFG)
    assert v.status is Status.HEALTHY
    assert "p99 290 ms" in v.message


def test_p99_unknown_on_one_side_is_not_compared() -> None:
    v = assess(p99(5.0), stats(), CFG)
    assert v.status is Status.HEALTHY


def test_without_a_baseline_the_absolute_p99_limit_applies() -> None:
    cfg = AnalysisConfig(min_requests=100, max_p99_seconds=0.3)
    v = assess(p99(0.5), stats(0), cfg)
    assert (v.status, v.reason) == (Status.FAILING, VerdictReason.LATENCY)
    assert v.message.startswith("green p99 500 ms is above the 300 ms limit")


def test_without_a_baseline_the_absolute_p99_limit_spares_a_candidate_as_slow_as_it() -> None:
    cfg = AnalysisConfig(min_requests=100, max_p99_seconds=0.3)
    slow = WindowStats(requests=10, p99_seconds=0.9)
    assert assess(p99(0.5), slow, cfg).status is Status.HEALTHY


def test_without_a_baseline_and_no_absolute_p99_limit_latency_is_not_judged() -> None:
    v = assess(p99(30.0), stats(0), CFG)
    assert v.status is Status.HEALTHY


def test_p99_comes_from_the_histogram_when_not_given() -> None:
    slow = Histogram(BOUNDS, (0, 0, 0, 0, 1000, 0))  # everything in (0.5, 1.0]
    fast = Histogram(BOUNDS, (1000, 0, 0, 0, 0, 0))  # everything under 10 ms
    v = assess(stats(latency=slow), stats(latency=fast), CFG)
    assert (v.status, v.reason) == (Status.FAILING, VerdictReason.LATENCY_VS_BASELINE)
    assert v.candidate_p99 == pytest.approx(0.995)


def test_explicit_quantiles_win_over_the_histogram() -> None:
    w = stats(latency=Histogram(BOUNDS, (0, 0, 0, 0, 10, 0)), p50_seconds=0.001, p99_seconds=0.002)
    assert (w.p50, w.p99) == (0.001, 0.002)


def test_status_severity_order() -> None:
    assert is_worse(Status.HEALTHY, Status.INCONCLUSIVE)
    assert is_worse(Status.INCONCLUSIVE, Status.FAILING)
    assert not is_worse(Status.FAILING, Status.HEALTHY)


# --------------------------------------------------------------------------- histograms


def test_quantiles_interpolate_inside_the_bucket_like_promql() -> None:
    h = Histogram((0.1, 0.2, 0.5, math.inf), (50, 40, 9, 1))
    assert h.quantile(0.5) == pytest.approx(0.1)
    assert h.quantile(0.25) == pytest.approx(0.05)
    assert h.quantile(0.99) == pytest.approx(0.5)
    assert h.quantile(0.95) == pytest.approx(0.2 + 0.3 * 5 / 9)


def test_a_quantile_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    assert Histogram((0.1, math.inf), (1, 9)).quantile(0.99) == 0.1


def test_an_empty_histogram_has_no_quantile() -> None:
    assert Histogram((0.1, math.inf), (0, 0)).quantile(0.5) is None


def test_leading_empty_buckets_are_skipped() -> None:
    assert Histogram((0.1, 0.2, 0.3), (0, 0, 4)).quantile(0.5) == pytest.approx(0.25)


def test_prometheus_cumulative_buckets_convert() -> None:
    h = Histogram.from_cumulative((0.1, 0.5, math.inf), (3, 7, 10))
    assert h.counts == (3, 4, 3)
    with pytest.raises(ValueError, match="must not decrease"):
        Histogram.from_cumulative((0.1, 0.5), (3, 2))


@pytest.mark.parametrize(
    ("bounds", "counts", "problem"),
    [
        ((), (), "one count per bound"),
        ((0.1, 0.2), (1,), "one count per bound"),
        ((0.2, 0.1), (1, 1), "increasing"),
        ((-0.1, 0.1), (1, 1), ">= 0"),
        ((0.1,), (-1,), "integers >= 0"),
    ],
    ids=["empty", "lengths", "order", "negative-bound", "negative-count"],
)
def test_bad_histograms_are_refused(
    bounds: tuple[float, ...], counts: tuple[int, ...], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Histogram(bounds, counts)


def test_histograms_with_different_buckets_cannot_be_combined() -> None:
    with pytest.raises(ValueError, match="every proxy replica must use the same latency buckets"):
        _ = Histogram((0.1,), (1,)) + Histogram((0.2,), (1,))


def test_quantile_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        Histogram((0.1,), (1,)).quantile(1.5)


# --------------------------------------------------------------------------- windows


def test_window_is_the_difference_of_two_snapshots() -> None:
    before = Counters(100, 1, 2, 3, Histogram(BOUNDS, (10, 0, 0, 0, 0, 0)))
    after = Counters(250, 4, 2, 5, Histogram(BOUNDS, (30, 5, 0, 0, 0, 0)))
    assert window(before, after) == WindowStats(
        150, 3, 0, 2, Histogram(BOUNDS, (20, 5, 0, 0, 0, 0))
    )


def test_a_counter_that_went_down_means_a_proxy_restart() -> None:
    before = Counters(1000, 10, 0, 0)
    after = Counters(40, 1, 0, 0)
    assert window(before, after) == WindowStats(40, 1, 0, 0)


def test_a_histogram_bucket_that_went_down_means_a_restart_too() -> None:
    before = Counters(10, 0, 0, 0, Histogram(BOUNDS, (10, 0, 0, 0, 0, 0)))
    after = Counters(12, 0, 0, 0, Histogram(BOUNDS, (2, 10, 0, 0, 0, 0)))
    assert window(before, after).requests == 12


def test_window_latency_is_unknown_when_one_snapshot_has_no_histogram() -> None:
    after = Counters(20, 0, 0, 0, Histogram(BOUNDS, (20, 0, 0, 0, 0, 0)))
    assert window(Counters(10), after).latency is None


def test_windows_of_several_replicas_add_up() -> None:
    a = WindowStats(100, 1, 0, 0, Histogram(BOUNDS, (100, 0, 0, 0, 0, 0)), p99_seconds=0.001)
    b = WindowStats(50, 0, 2, 1, Histogram(BOUNDS, (0, 50, 0, 0, 0, 0)))
    total = combine([a, b, WindowStats()])
    assert total == WindowStats(150, 1, 2, 1, Histogram(BOUNDS, (100, 50, 0, 0, 0, 0)))
    assert total.p99_seconds is None  # quantiles cannot be summed


@pytest.mark.parametrize(
    "kwargs",
    [{"requests": -1}, {"errors_5xx": True}, {"p99_seconds": math.nan}, {"p50_seconds": -1.0}],
    ids=["negative", "bool", "nan-quantile", "negative-quantile"],
)
def test_bad_window_values_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        WindowStats(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"min_requests": 0}, "min_requests must be an integer >= 1"),
        ({"max_error_rate": 5}, "max_error_rate must be a fraction"),
        ({"error_rate_margin": -0.1}, "error_rate_margin must be a fraction"),
        ({"p99_factor": 0.5}, "p99_factor must be >= 1"),
        ({"p99_floor_seconds": -1}, "p99_floor_seconds must be"),
        ({"max_p99_seconds": math.inf}, "max_p99_seconds must be"),
        ({"consecutive_failure_limit": 0}, "consecutive_failure_limit"),
        ({"failure_limit": 0}, "failure_limit"),
        ({"inconclusive_limit": 0}, "inconclusive_limit"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else "",
)
def test_bad_analysis_config_is_refused(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AnalysisConfig(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the run

FAILING = Verdict(Status.FAILING, VerdictReason.ERROR_RATE_VS_BASELINE, "green 9 % vs blue 0 %")
HEALTHY = Verdict(Status.HEALTHY, VerdictReason.WITHIN_LIMITS, "ok")
UNSURE = Verdict(Status.INCONCLUSIVE, VerdictReason.NOT_ENOUGH_DATA, "12 requests")


def feed(run: AnalysisRun, *verdicts: Verdict) -> tuple[AnalysisRun, list[Decision]]:
    decisions = []
    for i, v in enumerate(verdicts):
        run, d = run.observe(v, at=float(i))
        decisions.append(d)
    return run, decisions


def test_one_noisy_window_does_not_fail_the_run() -> None:
    run, decisions = feed(AnalysisRun(CFG), FAILING, HEALTHY, FAILING, HEALTHY)
    assert decisions == [Decision.CONTINUE] * 4
    assert (run.phase, run.failed, run.healthy, run.failing_since) == (RunPhase.RUNNING, 2, 2, None)


def test_consecutive_failures_fail_the_run_from_the_first_one() -> None:
    run, decisions = feed(AnalysisRun(CFG), HEALTHY, FAILING, FAILING)
    assert decisions == [Decision.CONTINUE, Decision.CONTINUE, Decision.FAIL]
    assert (run.phase, run.reason, run.failing_since) == (
        RunPhase.FAILED,
        VerdictReason.ERROR_RATE_VS_BASELINE,
        1.0,
    )
    assert run.message == "2 consecutive failing windows: green 9 % vs blue 0 %"


def test_an_inconclusive_window_does_not_break_a_run_of_failures() -> None:
    _, decisions = feed(AnalysisRun(CFG), FAILING, UNSURE, FAILING)
    assert decisions[-1] is Decision.FAIL


def test_total_failure_limit_fails_scattered_failures() -> None:
    cfg = AnalysisConfig(consecutive_failure_limit=3, failure_limit=2)
    run, decisions = feed(AnalysisRun(cfg), FAILING, HEALTHY, FAILING)
    assert decisions[-1] is Decision.FAIL
    assert run.message.startswith("2 failing windows (failure limit 2)")


def test_inconclusive_windows_are_ignored_without_a_limit() -> None:
    run, decisions = feed(AnalysisRun(CFG), *[UNSURE] * 20)
    assert set(decisions) == {Decision.CONTINUE}
    assert run.inconclusive == 20


def test_inconclusive_limit_asks_for_a_pause_and_counts_again() -> None:
    cfg = AnalysisConfig(inconclusive_limit=3)
    run, decisions = feed(AnalysisRun(cfg), *[UNSURE] * 6)
    assert decisions == [Decision.CONTINUE] * 2 + [Decision.PAUSE] + [Decision.CONTINUE] * 2 + [
        Decision.PAUSE
    ]
    assert (run.phase, run.reason) == (RunPhase.RUNNING, VerdictReason.NOT_ENOUGH_DATA)
    assert run.message == "3 inconclusive windows in a row: 12 requests"


def test_inconclusive_limit_can_fail_instead() -> None:
    cfg = AnalysisConfig(inconclusive_limit=2, on_inconclusive=InconclusivePolicy.FAIL)
    run, decisions = feed(AnalysisRun(cfg), UNSURE, UNSURE)
    assert (decisions[-1], run.phase) == (Decision.FAIL, RunPhase.FAILED)


def test_measurements_that_cannot_be_taken_fail_after_the_limit() -> None:
    run = AnalysisRun(AnalysisConfig(consecutive_error_limit=2))
    run, d1 = run.observe_error("replica 2 metrics: connection refused", at=1.0)
    run, d2 = run.observe_error("replica 2 metrics: connection refused", at=2.0)
    assert (d1, d2) == (Decision.CONTINUE, Decision.FAIL)
    assert (run.reason, run.failing_since, run.errors) == (VerdictReason.MEASUREMENT_ERROR, 2.0, 2)
    assert "2 measurements in a row could not be taken" in run.message


def test_a_verdict_resets_the_measurement_error_count() -> None:
    run = AnalysisRun(AnalysisConfig(consecutive_error_limit=2))
    run, _ = run.observe_error("x", at=1.0)
    run, _ = run.observe(HEALTHY, at=2.0)
    run, d = run.observe_error("x", at=3.0)
    assert (d, run.consecutive_errors, run.measurements) == (Decision.CONTINUE, 1, 3)


def test_a_failed_run_ignores_later_observations() -> None:
    run, _ = feed(AnalysisRun(CFG), FAILING, FAILING)
    assert run.observe(HEALTHY, at=9.0) == (run, Decision.CONTINUE)
    assert run.observe_error("x", at=9.0) == (run, Decision.CONTINUE)
