"""bench/report.py: best-of selection, ratios against nginx, the table and the JSON."""

from __future__ import annotations

import json
import math

import pytest

from bench.report import (
    P99_ADDED_BUDGET_S,
    FixedRate,
    IdleMemory,
    LoadPoint,
    Report,
    Throughput,
    best_fixed_rate,
    best_throughput,
    capacity_line,
    capacity_ratio,
    cpu_stall_note,
    fixed_rate_rows,
    fmt_bytes,
    fmt_ratio,
    fmt_time,
    highest_within_budget,
    load_points,
    p99_added,
    ratio,
    render,
    render_table,
    rounds_at_rates,
    to_json,
)
from bench.stalls import CpuStalls
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


def _fixed(
    target: str, p99: float, *, rate: float = 20_000.0, completed: int | None = None
) -> FixedRate:
    """A 10 s run at ``rate``; all requests answered in the window unless ``completed`` says."""
    released = round(rate * 10)
    done = released if completed is None else completed
    result = RateResult(
        target_rate=rate,
        window_s=10.0,
        released=released,
        completed=done,
        completed_in_window=done,
        errors=0,
        unanswered=0,
        latency={"p50": 50e-6, "p90": 80e-6, "p99": p99, "p99.9": 2 * p99, "max": 3 * p99},
        lag={"p99": 20e-6},
        completed_total=round(released * 1.1),  # warm-up responses count too
    )
    # The proxies use 22 µs of CPU per request (over warm-up, window and drain).
    cpu = None if target == "direct" else 22e-6 * result.completed_total
    return FixedRate(target, "1k", result, proxy_cpu_s=cpu)


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


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.9999e-3, "1.00 ms"), (0.999999, "1.00 s")],
    ids=["micro-to-milli", "milli-to-seconds"],
)
def test_fmt_time_switches_unit_when_rounding_reaches_the_next(seconds: float, text: str) -> None:
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


# --------------------------------------------------------------------------- several rates

PEAK = 40_000.0  # nginx's 1k req/s in RUNS
RATES = (8_000.0, 12_000.0, 16_000.0, 20_000.0)
# p99 at each rate; direct adds nothing, so p99 added = p99 - 0.2 ms.
NGINX_P99 = (0.5e-3, 0.8e-3, 1.2e-3, 1.9e-3)  # added 0.3 .. 1.7 ms: always within 2 ms
BLUEGREEN_P99 = (1.0e-3, 2.1e-3, 5.0e-3, 30e-3)  # added 0.8, 1.9, 4.8, 29.8 ms


def _sweep() -> list[FixedRate]:
    """Best runs of a sweep, in the order best_fixed_rate returns them."""
    runs = []
    for rate, nginx_p99, bluegreen_p99 in zip(RATES, NGINX_P99, BLUEGREEN_P99, strict=True):
        runs += [
            _fixed("direct", 0.2e-3, rate=rate),
            _fixed("nginx", nginx_p99, rate=rate),
            _fixed("bluegreen", bluegreen_p99, rate=rate),
        ]
    return runs


def _sweep_report() -> Report:
    report = _report()
    report.fixed_rate = _sweep()
    return report


def test_best_fixed_rate_keeps_one_run_per_target_and_rate_ordered_by_rate() -> None:
    runs = [
        _fixed("bluegreen", 0.003, rate=12_000),
        _fixed("nginx", 0.001, rate=12_000),
        _fixed("nginx", 0.002, rate=6_000),
        _fixed("nginx", 0.004, rate=6_000),  # same target and rate, worse p99
        _fixed("direct", 0.0002, rate=12_000),
        _fixed("direct", 0.0002, rate=6_000),
    ]
    best = best_fixed_rate(runs)
    assert [(r.rate, r.target) for r in best] == [
        (6_000, "direct"),
        (6_000, "nginx"),
        (12_000, "direct"),
        (12_000, "nginx"),
        (12_000, "bluegreen"),
    ]
    assert best[1].result.latency["p99"] == 0.002


def test_p99_added_subtracts_direct_at_the_same_rate() -> None:
    runs = [
        _fixed("direct", 0.1e-3, rate=6_000),
        _fixed("direct", 0.5e-3, rate=12_000),
        _fixed("bluegreen", 1.0e-3, rate=6_000),
        _fixed("bluegreen", 3.0e-3, rate=12_000),
    ]
    assert p99_added(runs[2], runs) == pytest.approx(0.9e-3)
    assert p99_added(runs[3], runs) == pytest.approx(2.5e-3)
    assert p99_added(runs[0], runs) is None  # direct adds nothing to itself


def test_p99_added_is_none_without_direct_at_that_rate() -> None:
    runs = [_fixed("direct", 0.1e-3, rate=6_000), _fixed("nginx", 1e-3, rate=12_000)]
    assert p99_added(runs[1], runs) is None


def test_fixed_rate_rows_show_p99_added_per_rate() -> None:
    rows = fixed_rate_rows(_sweep())
    added = {(row[2], row[1]): row[9] for row in rows}
    assert added[("8,000", "bluegreen")] == "800 µs"
    assert added[("20,000", "bluegreen")] == "29.80 ms"
    assert added[("16,000", "nginx")] == "1.00 ms"
    assert added[("8,000", "direct")] == "-"


def test_fixed_rate_busy_is_cpu_per_request_times_achieved_rate() -> None:
    run = _fixed("bluegreen", 1e-3, rate=20_000)
    assert run.cpu_us_per_request == pytest.approx(22.0)
    assert run.busy == pytest.approx(0.44)  # 22 µs x 20,000/s
    assert _fixed("direct", 1e-3).busy is None


def test_load_points_one_per_rate_with_fraction_added_and_busy() -> None:
    points = load_points(_sweep(), PEAK)
    assert [p.rate for p in points] == list(RATES)
    first = points[0]
    assert first.fraction == pytest.approx(0.2)
    assert first.added["nginx"] == pytest.approx(0.3e-3)
    assert first.added["bluegreen"] == pytest.approx(0.8e-3)
    assert first.bluegreen_busy == pytest.approx(22e-6 * 8_000)
    assert first.invalid == ()


def test_load_points_name_invalid_runs_and_have_no_fraction_without_peak() -> None:
    runs = _sweep()
    runs[2] = _fixed("bluegreen", 1e-3, rate=8_000, completed=10)  # could not keep up
    (first, *_) = load_points(runs, None)
    assert first.fraction is None
    assert first.invalid == ("bluegreen",)


def _capacity(points: list[LoadPoint], proxy: str) -> float | None:
    point = highest_within_budget(points, proxy)
    return None if point is None else point.rate


def test_highest_rate_within_budget_per_proxy_and_ratio() -> None:
    points = load_points(_sweep(), PEAK)
    assert _capacity(points, "nginx") == 20_000
    assert _capacity(points, "bluegreen") == 12_000
    assert capacity_ratio(points) == pytest.approx(0.6)


def test_highest_rate_within_budget_ignores_invalid_runs() -> None:
    runs = _sweep()
    # bluegreen at 16,000/s: 1 ms p99 would be within budget, but it did not hold the rate.
    runs[8] = _fixed("bluegreen", 1e-3, rate=16_000, completed=1000)
    # nginx at 20,000/s is within budget, but direct's run at that rate is not valid.
    runs[9] = _fixed("direct", 0.2e-3, rate=20_000, completed=1000)
    points = load_points(runs, PEAK)
    assert _capacity(points, "bluegreen") == 12_000
    assert _capacity(points, "nginx") == 16_000


def test_highest_rate_within_budget_stops_at_the_first_miss() -> None:
    runs = _sweep()
    # bluegreen misses the budget at 8,000/s: its passes at 12,000/s and above do not count.
    runs[2] = _fixed("bluegreen", 5e-3, rate=8_000)
    points = load_points(best_fixed_rate(runs), PEAK)
    assert _capacity(points, "bluegreen") is None
    assert _capacity(points, "nginx") == 20_000


def test_highest_rate_within_budget_never_met() -> None:
    runs = [r for r in _sweep() if r.target != "bluegreen"]
    runs += [_fixed("bluegreen", 10e-3, rate=rate) for rate in RATES]
    points = load_points(best_fixed_rate(runs), PEAK)
    assert highest_within_budget(points, "bluegreen") is None
    assert capacity_ratio(points) is None
    line = capacity_line(points)
    assert "bluegreen never met it" in line
    assert "bluegreen/nginx -" in line


def test_budget_is_issue_8s_two_milliseconds() -> None:
    assert P99_ADDED_BUDGET_S == 0.002


def test_capacity_line_names_rates_fractions_and_ratio() -> None:
    line = capacity_line(load_points(_sweep(), PEAK))
    assert "p99 added ≤ 2.00 ms" in line
    # nginx met it at the top of the sweep: its capacity may be higher still.
    assert "nginx 20,000/s (0.50 of nginx's peak) (the highest rate measured" in line
    assert "bluegreen 12,000/s (0.30 of nginx's peak);" in line
    assert line.endswith("bluegreen/nginx 0.60x")


def test_capacity_line_says_when_a_proxy_was_not_measured() -> None:
    runs = [r for r in _sweep() if r.target != "bluegreen"]
    assert "bluegreen not measured" in capacity_line(load_points(runs, PEAK))


def test_render_latency_vs_load_table() -> None:
    lines = render(_sweep_report()).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Latency vs load"))
    assert "budget 2.00 ms" in lines[start]
    header, _, *rows = lines[start + 1 : start + 7]
    assert header.split()[:3] == ["offered/s", "of", "nginx's"]
    assert rows[0].split() == ["8,000", "0.20", "300", "µs", "800", "µs", "18%", "yes"]
    assert rows[3].split()[:2] == ["20,000", "0.50"]
    assert "29.80 ms" in rows[3]
    assert lines[start + 7].startswith("  latency-bound capacity")


def test_render_latency_vs_load_marks_invalid_runs() -> None:
    report = _sweep_report()
    report.fixed_rate[5] = _fixed("bluegreen", 2e-3, rate=12_000, completed=10)
    text = render(report)
    row = next(line for line in text.splitlines() if line.startswith("12,000"))
    assert row.endswith("NO: bluegreen")
    # With several rates, the reason names the rate as well as the target.
    assert "bluegreen at 12,000/s: not valid: achieved 1/s of 12,000/s" in text


def test_render_has_no_latency_vs_load_table_for_one_rate() -> None:
    assert "Latency vs load" not in render(_report())


def test_json_latency_vs_load_summary() -> None:
    data = to_json(_sweep_report())
    json.dumps(data, allow_nan=False)
    summary = data["latency_vs_load"]
    assert isinstance(summary, dict)
    assert summary["p99_added_budget_s"] == 0.002
    assert [r["rate"] for r in summary["rates"]] == list(RATES)
    first = summary["rates"][0]
    assert first["fraction_of_nginx_peak"] == pytest.approx(0.2)
    assert first["p99_added_s"]["bluegreen"] == pytest.approx(0.8e-3)
    assert first["bluegreen_core_busy"] == pytest.approx(0.176)
    assert first["invalid"] == []
    assert summary["highest_rate_within_budget"] == {"nginx": 20_000, "bluegreen": 12_000}
    assert summary["capacity_ratio"] == pytest.approx(0.6)


def test_json_fixed_rate_entries_keep_their_rate_and_p99_added() -> None:
    fixed = to_json(_sweep_report())["fixed_rate"]
    assert isinstance(fixed, list)
    assert [(f["target"], f["target_rate"]) for f in fixed[:4]] == [
        ("direct", 8_000),
        ("nginx", 8_000),
        ("bluegreen", 8_000),
        ("direct", 12_000),
    ]
    assert fixed[2]["p99_added_s"] == pytest.approx(0.8e-3)
    assert fixed[0]["p99_added_s"] is None


def test_json_has_no_latency_vs_load_for_one_rate() -> None:
    assert to_json(_report())["latency_vs_load"] is None


# --------------------------------------------------------------------------- rounds


def _three_rounds() -> list[list[FixedRate]]:
    """Three interleaved rounds at 30,000/s; the second had a stall on everything."""
    rate = 30_000.0
    return [
        [_fixed("direct", 0.1e-3, rate=rate), _fixed("nginx", 1.4e-3, rate=rate),
         _fixed("bluegreen", 1.9e-3, rate=rate)],
        [_fixed("direct", 0.4e-3, rate=rate), _fixed("nginx", 14.0e-3, rate=rate),
         _fixed("bluegreen", 3.5e-3, rate=rate)],
        [_fixed("direct", 0.1e-3, rate=rate), _fixed("nginx", 1.8e-3, rate=rate),
         _fixed("bluegreen", 1.3e-3, rate=rate, completed=10)],  # not valid: too few answered
    ]  # fmt: skip


def test_rounds_compare_each_run_with_direct_of_the_same_round() -> None:
    nginx, bluegreen = rounds_at_rates(_three_rounds())
    assert (nginx.target, nginx.rate) == ("nginx", 30_000.0)
    assert nginx.added == pytest.approx((1.3e-3, 13.6e-3, 1.7e-3))
    assert nginx.valid == (True, True, True)
    assert nginx.within == 2
    assert bluegreen.added == pytest.approx((1.8e-3, 3.1e-3, 1.2e-3))
    assert bluegreen.valid == (True, True, False)
    assert bluegreen.within == 1  # the third is within 2 ms but not valid


def test_a_round_without_direct_is_never_within() -> None:
    rounds = [[_fixed("nginx", 0.5e-3)], [_fixed("direct", 0.1e-3), _fixed("nginx", 0.5e-3)]]
    (nginx,) = rounds_at_rates(rounds)
    assert nginx.added == (None, pytest.approx(0.4e-3))
    assert nginx.valid == (False, True)
    assert nginx.within == 1


def test_render_rounds_table_lists_every_round() -> None:
    report = _report()
    report.rounds = rounds_at_rates(_three_rounds())
    lines = render(report).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Rounds within"))
    assert "≤ 2.00 ms" in lines[start]
    row = lines[start + 3]
    assert row.startswith("30,000")
    assert "2/3" in row
    assert "1.30 ms, 13.60 ms, 1.70 ms" in row
    assert "1/3" in row
    assert "1.80 ms, 3.10 ms, 1.20 ms (not valid)" in row


def test_no_rounds_table_with_one_round() -> None:
    report = _report()
    report.rounds = rounds_at_rates(_three_rounds()[:1])
    assert "Rounds within" not in render(report)


def test_json_rounds() -> None:
    report = _report()
    report.rounds = rounds_at_rates(_three_rounds())
    data = json.loads(json.dumps(to_json(report)))
    nginx, bluegreen = data["rounds"]
    assert nginx["target"] == "nginx"
    assert nginx["within_budget"] == 2
    assert bluegreen["valid"] == [True, True, False]
    assert bluegreen["p99_added_s"] == pytest.approx([1.8e-3, 3.1e-3, 1.2e-3])


# --------------------------------------------------------------------------- CPU stalls


def test_note_only_when_a_stall_reaches_the_budget() -> None:
    below = P99_ADDED_BUDGET_S - 0.0001
    assert cpu_stall_note([CpuStalls(0, 3.0, (below,)), CpuStalls(1, 3.0, ())]) is None
    assert cpu_stall_note([]) is None
    assert cpu_stall_note([CpuStalls(0, 3.0, (P99_ADDED_BUDGET_S,))]) is not None
    note = cpu_stall_note([CpuStalls(0, 3.0, (below,)), CpuStalls(1, 3.0, (0.0068,))])
    assert note is not None
    assert note.startswith("the machine took a CPU away for up to 6.80 ms while every CPU was busy")
    assert "the p99 budget is 2.00 ms" in note
    assert "measure the machine as much as the proxy" in note
    assert note.endswith("read them next to nginx's rounds in this same run")


def _stalled_report(longest: float) -> Report:
    return Report(
        fixed_rate=[_fixed("direct", 0.001), _fixed("nginx", 0.001), _fixed("bluegreen", 0.001)],
        fixed_rate_note="  1k at 20,000 req/s, 50 connections",
        cpu_stalls=[
            CpuStalls(0, 3.0, (0.0011, longest), (0.0011, 0.0)),
            CpuStalls(1, 3.0, ()),
        ],
        memory=[IdleMemory("nginx", 2, 14 * 2**20, 15 * 2**20, 1000, 1000)],
    )


def test_render_shows_one_row_per_cpu_before_the_fixed_rate_runs() -> None:
    lines = render(_stalled_report(0.004)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("CPU stalls:"))
    assert "every CPU busy at once for 3.0 s before the fixed-rate runs" in lines[start]
    header = " ".join(lines[start + 1].split())
    assert header == "CPU gaps > 1 ms lost in gaps > 0.5 ms of it behind other tasks longest gap"
    assert lines[start + 3].split() == ["0", "2", "5.10", "ms", "1.10", "ms", "4.00", "ms"]
    assert lines[start + 4].split() == ["1", "0", "0", "µs", "-", "0", "µs"]  # waits unknown
    assert lines[start + 5] == ""
    assert lines[start + 6].startswith("Latency at a fixed rate")


def test_render_puts_the_note_under_the_fixed_rate_table() -> None:
    lines = render(_stalled_report(0.0045)).splitlines()
    table = next(i for i, line in enumerate(lines) if line.startswith("Latency at a fixed rate"))
    # Title, rate line, header, rule, direct, nginx, bluegreen: then the note.
    assert lines[table + 6].split()[:2] == ["1k", "bluegreen"]
    note = lines[table + 7]
    assert note.startswith("  CPU stalls: the machine took a CPU away for up to 4.50 ms")
    assert lines[table + 8] == ""
    assert sum("took a CPU away" in line for line in lines) == 1  # not repeated in the notes


def test_render_has_no_note_when_the_stalls_stay_below_the_budget() -> None:
    text = render(_stalled_report(0.0015))
    assert "CPU stalls:" in text
    assert "took a CPU away" not in text


def test_render_has_no_section_when_not_probed() -> None:
    report = _stalled_report(0.004)
    report.cpu_stalls = []
    text = render(report)
    assert "CPU stalls" not in text
    assert "took a CPU away" not in text


def test_json_carries_the_figures_or_null() -> None:
    skipped = to_json(Report())
    assert skipped["cpu_stalls"] is None
    assert skipped["cpu_stall_note"] is None
    data = to_json(Report(cpu_stalls=[CpuStalls(1, 3.0, (0.0005001, 0.003), (0.0, 0.003))]))
    json.dumps(data, allow_nan=False)
    assert data["cpu_stalls"] == [
        {
            "cpu": 1,
            "duration_s": 3.0,
            "gaps_over_1ms": 1,
            "lost_s": pytest.approx(0.0035001),
            "longest_s": 0.003,
            "behind_other_tasks_s": 0.003,
        }
    ]


def test_json_note_only_with_fixed_rate_runs_and_a_long_stall() -> None:
    note = to_json(_stalled_report(0.0045))["cpu_stall_note"]
    assert isinstance(note, str)
    assert note.startswith("the machine took a CPU away for up to 4.50 ms")
    assert to_json(_stalled_report(0.0015))["cpu_stall_note"] is None
    no_runs = _stalled_report(0.0045)
    no_runs.fixed_rate = []
    assert to_json(no_runs)["cpu_stall_note"] is None
    assert to_json(no_runs)["notes"] == []
