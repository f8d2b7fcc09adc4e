"""bench/stats.py and bench/pacer.py's pure parts: quantiles, validity, pacer's output."""

from __future__ import annotations

import json
import math
import struct

import pytest

from bench.pacer import parse_result, read_samples
from bench.stats import RateResult, quantile, summarise


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.0, 1.0), (0.01, 1.0), (0.5, 50.0), (0.99, 99.0), (0.991, 100.0), (1.0, 100.0)],
    ids=["min", "p1", "p50", "p99", "just-above-p99", "max"],
)
def test_quantile_is_nearest_rank(q: float, expected: float) -> None:
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, q) == expected


def test_quantile_of_nothing_is_nan() -> None:
    assert math.isnan(quantile([], 0.5))


def test_quantile_outside_range_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        quantile([1.0], 1.5)


def test_summarise_sorts_first() -> None:
    s = summarise([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"p50": 3.0, "p90": 5.0, "p99": 5.0, "p99.9": 5.0, "max": 5.0}


def _result(**changes: object) -> RateResult:
    base: dict[str, object] = {
        "target_rate": 10_000.0,
        "window_s": 10.0,
        "released": 100_000,
        "completed": 100_000,
        "completed_in_window": 100_000,
        "errors": 0,
        "unanswered": 0,
        "latency": {"p99": 0.0005},
        "lag": {"p99": 0.0001},
    }
    base.update(changes)
    return RateResult(**base)  # type: ignore[arg-type]


def test_a_run_that_held_its_rate_is_valid() -> None:
    r = _result()
    assert r.achieved_rate == 10_000.0
    assert r.problems == []


def test_too_few_answers_in_the_window_is_not_valid() -> None:
    # An overloaded target answers every request eventually (during the drain),
    # but fewer per second than offered while the window lasts.
    r = _result(completed_in_window=90_000)
    assert r.achieved_rate == 9_000.0
    assert "achieved 9,000/s of 10,000/s" in r.problems[0]


def test_a_late_generator_is_not_valid() -> None:
    problems = _result(lag={"p99": 0.005}).problems
    assert len(problems) == 1
    assert "lag p99 5.00 ms" in problems[0]


def test_missing_lag_is_not_valid() -> None:
    assert _result(lag={}).problems


def test_errors_make_a_run_invalid() -> None:
    assert _result(errors=3, unanswered=1).problems == ["3 errors, 1 unanswered"]


def _samples(lat_ns: list[int], lag_ns: list[int]) -> bytes:
    n = len(lat_ns)
    return struct.pack(f"=q{n}q{n}q", n, *lat_ns, *lag_ns)


def test_read_samples_converts_nanoseconds() -> None:
    lat, lag = read_samples(_samples([1_000, 2_000_000], [50, 0]))
    assert lat == [1e-6, 2e-3]
    assert lag == [50e-9, 0.0]


def test_truncated_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="expected 4 values"):
        read_samples(_samples([1, 2], [3, 4])[:-8])


def test_parse_result_combines_counters_and_samples() -> None:
    counters = {
        "target_rate": 2.0,
        "window_s": 1.0,
        "released": 2,
        "completed": 2,
        "errors": 0,
        "unanswered": 0,
        "max_backlog": 1,
        "generator_cpu_s": 0.01,
        "reconnects": 0,
        "completed_total": 4,
        "completed_in_window": 2,
    }
    r = parse_result(json.dumps(counters) + "\n", _samples([100_000, 300_000], [10, 20]))
    assert r.completed_total == 4
    assert r.latency["p50"] == pytest.approx(100e-6)
    assert r.latency["max"] == pytest.approx(300e-6)
    assert r.lag["p99"] == pytest.approx(20e-9)
    assert r.to_dict()["achieved_rate"] == 2.0


def test_parse_result_without_json_says_so() -> None:
    with pytest.raises(ValueError, match="no JSON"):
        parse_result("pacer: connect to 127.0.0.1: Connection refused\n", _samples([], []))


def test_parse_result_rejects_non_numbers() -> None:
    with pytest.raises(ValueError, match="'errors' is not a number"):
        RateResult.from_counters(
            {"target_rate": 1, "window_s": 1, "released": 1, "completed": 1, "errors": "x"},
            latency={},
            lag={},
        )
