"""bench/report.py: best-of selection, ratios against nginx, the table and the JSON."""

from __future__ import annotations

import json
import math

import pytest

from bench.report import (
    FixedRate,
    IdleMemory,
    Report,
    Throughput,
    best_fixed_rate,
    best_throughput,
    fmt_bytes,
    fmt_ratio,
    fmt_time,
    ratio,
    render,
    render_table,
    to_json,
)
from bench.stats import RateResult
from bench.wrk import WrkResult


def _wrk(rps: float, *, p50: float = 0.001, p99: float = 0.002, non_2xx: int = 0) -> WrkResult:
    return WrkResult(
        requests=round(rps * 10),
        elapsed_s=10.0,
        bytes_read=0,
        rps=rps,
        p50_s=p50,
        p75_s=p50,
        p90_s=p99,
        p99_s=p99,
        non_2xx=non_2xx,
    )


def _tp(
    target: str, rps: float, cpu_s: float | None, payload: str = "1k", **wrk: object
) -> Throughput:
    return Throughput(
        target=target,
        payload=payload,
        wrk=_wrk(rps, **wrk),  # type: ignore[arg-type]
        wall_s=10.0,
        proxy_cpu_s=cpu_s,
        upstream_cpu_s=2.0,
        other_cpu_s=0.3,
    )


def _fixed(target: str, p99: float, *, completed: int = 200_000) -> FixedRate:
    result = RateResult(
        target_rate=20_000.0,
        window_s=10.0,
        released=200_000,
        completed=completed,
        completed_in_window=completed,
        errors=0,
        unanswered=0,
        latency={"p50": 50e-6, "p90": 80e-6, "p99": p99, "p99.9": 2 * p99, "max": 3 * p99},
        lag={"p99": 20e-6},
        completed_total=220_000,
    )
    return FixedRate(target, "1k", result, proxy_cpu_s=None if target == "direct" else 4.4)


# nginx: 40,000 req/s using 8.8 CPU s for 400,000 requests = 22 µs/req.
# bluegreen: 16,000 req/s using 7.2 CPU s for 160,000 requests = 45 µs/req.
RUNS = [
    _tp("direct", 50_000, None),
    _tp("nginx", 40_000, 8.8),
    _tp("bluegreen", 16_000, 7.2),
]


def test_ratio() -> None:
    assert ratio(16_000, 40_000) == pytest.approx(0.4)
    assert ratio(None, 1.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(math.nan, 1.0) is None


def test_cpu_per_request_and_busy() -> None:
    nginx = RUNS[1]
    assert nginx.cpu_us_per_request == pytest.approx(22.0)
    assert nginx.busy == pytest.approx(0.88)
    assert nginx.upstream_us_per_request == pytest.approx(5.0)
    assert nginx.other_cores == pytest.approx(0.03)
    assert RUNS[0].cpu_us_per_request is None
    assert RUNS[0].busy is None


def test_best_throughput_keeps_the_fastest_clean_run() -> None:
    runs = [
        _tp("nginx", 38_000, 8.0),
        _tp("nginx", 45_000, 8.0, non_2xx=5),  # faster but broken: not the best
        _tp("nginx", 41_000, 8.0),
        _tp("direct", 50_000, None),
    ]
    best = best_throughput(runs)
    assert [(r.target, r.wrk.rps) for r in best] == [("direct", 50_000), ("nginx", 41_000)]


def test_best_throughput_orders_payloads_then_targets() -> None:
    runs = [
        _tp("bluegreen", 1, 1.0, payload="1m"),
        _tp("nginx", 1, 1.0, payload="1m"),
        _tp("bluegreen", 1, 1.0),
        _tp("direct", 1, None),
    ]
    order = [(r.payload, r.target) for r in best_throughput(runs)]
    assert order == [("1k", "direct"), ("1k", "bluegreen"), ("1m", "nginx"), ("1m", "bluegreen")]


def test_best_fixed_rate_prefers_valid_runs_then_lowest_p99() -> None:
    runs = [
        _fixed("nginx", 0.004),
        _fixed("nginx", 0.001, completed=100_000),  # lowest p99 but did not hold the rate
        _fixed("nginx", 0.002),
    ]
    (best,) = best_fixed_rate(runs)
    assert best.result.latency["p99"] == 0.002


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (math.nan, "-"), (512e-6, "512 µs"), (2.284e-3, "2.28 ms"), (1.5, "1.50 s")],
    ids=["none", "nan", "micro", "milli", "seconds"],
)
def test_fmt_time(seconds: float | None, text: str) -> None:
    assert fmt_time(seconds) == text


def test_fmt_time_negative_difference() -> None:
    assert fmt_time(-250e-6) == "-250 µs"


def test_fmt_bytes_and_ratio() -> None:
    assert fmt_bytes(14.6 * 1024 * 1024) == "14.6 MiB"
    assert fmt_bytes(2048) == "2.0 KiB"
    assert fmt_ratio(0.4) == "0.40x"
    assert fmt_ratio(None) == "-"


def test_render_table_pads_and_aligns() -> None:
    lines = render_table(("payload", "target", "req/s"), [["1k", "nginx", "40,000"]])
    assert lines == [
        "payload  target   req/s",
        "-------  ------  ------",
        "1k       nginx   40,000",
    ]


def _report() -> Report:
    return Report(
        meta={"date": "2026-01-01 00:00 UTC", "machine": "2 CPUs"},
        throughput=RUNS,
        fixed_rate=[_fixed("direct", 0.0002), _fixed("nginx", 0.0011), _fixed("bluegreen", 0.0016)],
        fixed_rate_note="  1k at 20,000 req/s = half of nginx's peak in this run",
        memory=[
            IdleMemory("nginx", 2, 14 * 2**20, 15 * 2**20, 1000, 1000),
            IdleMemory("bluegreen", 1, 30 * 2**20, 33 * 2**20, 1000, 1000),
        ],
        notes=["a note"],
    )


def test_render_shows_ratios_against_nginx() -> None:
    text = render(_report())
    bluegreen = next(
        line for line in text.splitlines() if line.startswith("1k") and "bluegreen" in line
    )
    # 16,000 / 40,000 req/s and 22 / 45 µs per request.
    assert bluegreen.split()[-2:] == ["0.40x", "0.49x"]
    assert "16,000" in bluegreen
    assert "45.0" in bluegreen
    nginx = next(line for line in text.splitlines() if line.startswith("1k") and "nginx" in line)
    assert nginx.split()[-2:] == ["-", "-"]


def test_render_fixed_rate_shows_p99_added_over_direct() -> None:
    text = render(_report())
    rows = [line for line in text.splitlines() if line.startswith("1k") and "bluegreen" in line]
    row = next(line for line in rows if "20,000" in line)  # the fixed-rate table's row
    assert "1.40 ms" in row  # 1.6 ms - 0.2 ms
    assert row.split()[-1] == "yes"
    assert "half of nginx's peak" in text


def test_render_memory_per_connection_and_ratio() -> None:
    text = render(_report())
    row = next(line for line in text.splitlines() if line.startswith("bluegreen  1"))
    assert "3.1 KiB" in row  # 3 MiB over 1000 connections
    assert "1000/1000" in row
    assert row.endswith("2.20x")  # 33 MiB / 15 MiB


def test_render_lists_failures() -> None:
    report = _report()
    report.failures.append("bluegreen: did not start")
    assert "FAILED:\n  - bluegreen: did not start" in render(report)


def test_render_explains_invalid_fixed_rate_runs() -> None:
    report = _report()
    report.fixed_rate = [_fixed("bluegreen", 0.002, completed=10)]
    text = render(report)
    assert "bluegreen: not valid: achieved 1/s of 20,000/s" in text


def test_json_is_serialisable_and_carries_ratios() -> None:
    data = to_json(_report())
    text = json.dumps(data, allow_nan=False)  # NaN would not be valid JSON
    assert '"rps_vs_nginx": 0.4' in text
    throughput = data["throughput"]
    assert isinstance(throughput, list)
    bluegreen = throughput[2]
    assert bluegreen["target"] == "bluegreen"
    assert bluegreen["per_core_vs_nginx"] == pytest.approx(22 / 45)
    assert throughput[1]["rps_vs_nginx"] is None  # nginx against itself


def test_json_turns_nan_quantiles_into_null() -> None:
    report = _report()
    empty = RateResult(
        target_rate=1.0,
        window_s=1.0,
        released=1,
        completed=0,
        errors=1,
        unanswered=0,
        latency={"p99": math.nan},
        lag={"p99": math.nan},
    )
    report.fixed_rate = [FixedRate("nginx", "1k", empty, None)]
    data = to_json(report)
    json.dumps(data, allow_nan=False)
    fixed = data["fixed_rate"]
    assert isinstance(fixed, list)
    assert fixed[0]["latency"] == {"p99": None}
