"""bench/proxy.py options: --sweep parsing and cross-checks, the rate plan, the time budget."""

from __future__ import annotations

import pytest

from bench import proxy
from bench.report import Throughput
from bench.wrk import WrkResult


def test_sweep_is_empty_by_default() -> None:
    assert proxy.parse_args([]).sweep == []


def test_sweep_is_sorted_without_repeats() -> None:
    assert proxy.parse_args(["--sweep", "0.5, 0.2,0.4,0.2"]).sweep == [0.2, 0.4, 0.5]


def test_sweep_accepts_one() -> None:
    assert proxy.parse_args(["--sweep", "1"]).sweep == [1.0]


@pytest.mark.parametrize(
    "text",
    ["0", "0.2,1.5", "-0.1", "half", "", "nan", "inf"],
    ids=["zero", "above-one", "negative", "word", "empty", "nan", "inf"],
)
def test_bad_sweep_exits_2_naming_the_range(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        proxy.parse_args(["--sweep", text])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--sweep" in err
    assert "fractions of nginx's 1k peak, each greater than 0 and at most 1" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fixed-rate", "off"], "--sweep needs the fixed-rate runs, but --fixed-rate is off"),
        (["--only", "1m"], "--sweep measures the 1k payload; add 1k to --only"),
        (["--targets", "direct,bluegreen"], "add nginx to --targets"),
    ],
    ids=["fixed-rate-off", "no-1k", "no-nginx"],
)
def test_sweep_conflicts_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        proxy.parse_args(["--sweep", "0.2,0.4", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_options_without_sweep_are_not_cross_checked() -> None:
    args = proxy.parse_args(["--fixed-rate", "off", "--only", "1m", "--targets", "direct"])
    assert args.fixed_rate == "off"
    assert args.sweep == []


def test_sweep_with_a_fixed_rate_parses() -> None:
    args = proxy.parse_args(["--sweep", "0.3", "--fixed-rate", "9000", "--only", "1k"])
    assert args.sweep == [0.3]
    assert args.fixed_rate == 9000.0


def test_main_rejects_a_sweep_conflict_before_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_run(args: object, tmp: object) -> None:
        raise AssertionError("the benchmark must not start")

    monkeypatch.setattr(proxy, "run", no_run)
    with pytest.raises(SystemExit) as exc:
        proxy.main(["--sweep", "0.2", "--fixed-rate", "off"])
    assert exc.value.code == proxy.EXIT_USAGE
    assert "--fixed-rate is off" in capsys.readouterr().err


# --------------------------------------------------------------------------- the rate plan


def test_plan_without_sweep_is_the_single_auto_rate() -> None:
    rates, note = proxy.fixed_rate_plan("auto", [], 24_761.0, 50)
    assert rates == [12_380.0]
    assert note == "  1k at 12,380 req/s = half of nginx's peak in this run, 50 connections"


def test_plan_without_sweep_is_the_single_given_rate() -> None:
    rates, note = proxy.fixed_rate_plan(9000.0, [], None, 50)
    assert rates == [9000.0]
    assert note == "  1k at 9,000 req/s, 50 connections"


def test_plan_off_has_no_rates() -> None:
    assert proxy.fixed_rate_plan("off", [], 24_000.0, 50) == ([], "")


def test_plan_auto_without_peak_is_skipped() -> None:
    rates, note = proxy.fixed_rate_plan("auto", [], None, 50)
    assert rates == []
    assert note == "  skipped: --fixed-rate auto needs nginx's 1k peak; give a rate"


def test_plan_sweep_adds_fractions_to_the_auto_rate_and_deduplicates() -> None:
    rates, note = proxy.fixed_rate_plan("auto", [0.2, 0.4, 0.5], 24_000.0, 50)
    assert rates == [4_800.0, 9_600.0, 12_000.0]  # 0.5 is the auto rate: measured once
    assert "1k at 4,800, 9,600, 12,000 req/s = 0.20, 0.40, 0.50 of nginx's peak" in note
    assert "(24,000 req/s)" in note


def test_plan_sweep_adds_the_given_rate_as_one_more() -> None:
    rates, _ = proxy.fixed_rate_plan(10_000.0, [0.2, 0.8], 24_000.0, 50)
    assert rates == [4_800.0, 10_000.0, 19_200.0]


def test_plan_sweep_without_peak_keeps_the_given_rate_and_says_why() -> None:
    rates, note = proxy.fixed_rate_plan(9000.0, [0.2], None, 50)
    assert rates == [9000.0]
    assert "--sweep skipped: it needs nginx's 1k peak from this run" in note


def test_plan_auto_sweep_without_peak_is_skipped_naming_both() -> None:
    rates, note = proxy.fixed_rate_plan("auto", [0.2], None, 50)
    assert rates == []
    assert "skipped: --fixed-rate auto and --sweep need nginx's 1k peak" in note


def test_plan_tiny_fraction_never_offers_zero() -> None:
    rates, _ = proxy.fixed_rate_plan(5.0, [0.001], 100.0, 50)
    assert rates == [1.0, 5.0]


def _nginx_1k(rps: float) -> Throughput:
    wrk = WrkResult(
        requests=round(rps * 10), elapsed_s=10.0, bytes_read=0, rps=rps,
        p50_s=0.001, p75_s=0.001, p90_s=0.002, p99_s=0.002,
    )  # fmt: skip
    return Throughput("nginx", "1k", wrk, wall_s=10.0, proxy_cpu_s=5.0, upstream_cpu_s=2.0)


def test_rates_of_the_run_take_nginx_1k_peak_from_its_throughput() -> None:
    throughput = [_nginx_1k(30_000.0)]
    rates, note = proxy.fixed_rate_rates(proxy.parse_args([]), throughput)
    assert rates == [15_000.0]
    assert "half of nginx's peak" in note


def test_no_rates_when_off_or_without_1k_so_no_stall_probe_either() -> None:
    throughput = [_nginx_1k(30_000.0)]
    off = proxy.parse_args(["--fixed-rate", "off"])
    assert proxy.fixed_rate_rates(off, throughput) == ([], "")
    only_1m = proxy.parse_args(["--only", "1m", "--fixed-rate", "9000"])
    assert proxy.fixed_rate_rates(only_1m, throughput) == (
        [],
        "  skipped: the fixed-rate runs use the 1k payload (add it to --only)",
    )
    no_peak = proxy.parse_args(["--targets", "direct,bluegreen"])
    assert proxy.fixed_rate_rates(no_peak, [])[0] == []


# --------------------------------------------------------------------------- time budget


def _budget_for(*argv: str) -> float:
    args = proxy.parse_args(["--duration", "10", "--warmup", "2", *argv])
    return proxy._budget(args)


def test_budget_counts_every_sweep_rate() -> None:
    single = _budget_for("--repeat", "2")
    swept = _budget_for("--repeat", "2", "--sweep", "0.2,0.3,0.4")
    # Three more rates x 2 rounds x 3 targets, each bounded by warm-up + duration + 30 s.
    assert swept - single == pytest.approx(3 * 2 * 3 * 42)


def test_budget_without_fixed_rate_has_no_fixed_runs() -> None:
    with_fixed = _budget_for("--only", "1k")
    without = _budget_for("--only", "1k", "--fixed-rate", "off")
    assert with_fixed - without == pytest.approx(3 * 42)
