"""bench.stalls and bench.busyloop: the CPU-stall probe, its output and its option.

How the report shows the stalls is in test_bench_report.py.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from bench import busyloop, proxy
from bench.stalls import CpuStalls, parse_probe_output


def test_figures_count_only_gaps_over_one_ms() -> None:
    cpu = CpuStalls(1, 3.0, (0.0006, 0.0011, 0.0045, 0.0009))
    assert cpu.gaps_over_1ms == 2
    assert cpu.lost_s == pytest.approx(0.0071)
    assert cpu.longest_s == 0.0045


def test_no_gaps_is_zero_everywhere() -> None:
    cpu = CpuStalls(0, 3.0, ())
    assert (cpu.gaps_over_1ms, cpu.lost_s, cpu.longest_s) == (0, 0.0, 0.0)
    assert isinstance(cpu.lost_s, float)  # JSON: 0.0, like the other seconds


def _line(duration: object = 3.0001, gaps: object = (0.002, 0.0007), cpus: object = (1,)) -> str:
    return json.dumps({"duration_s": duration, "gaps_s": gaps, "cpus": cpus})


def test_parse_reads_the_last_json_line() -> None:
    text = "some warning\n" + _line()
    assert parse_probe_output(text, 1) == CpuStalls(1, 3.0001, (0.002, 0.0007))


def test_parse_keeps_the_waits_and_splits_the_lost_time() -> None:
    line = json.dumps(
        {"duration_s": 3.0, "gaps_s": [0.004, 0.002], "waited_s": [0.0039, 0.0], "cpus": [1]}
    )
    found = parse_probe_output(line, 1)
    assert found.waited_s == (0.0039, 0.0)
    assert found.behind_tasks_s == pytest.approx(0.0039)  # the other 2.1 ms: the host


def test_behind_tasks_never_exceeds_the_gap_and_is_unknown_without_waits() -> None:
    assert CpuStalls(0, 3.0, (0.002,), (0.0025,)).behind_tasks_s == 0.002
    assert CpuStalls(0, 3.0, (0.002,)).behind_tasks_s is None


def test_run_delay_is_read_from_the_kernel_or_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    delay = busyloop.run_delay_s()
    assert delay is None or delay >= 0
    monkeypatch.setattr(busyloop, "SCHEDSTAT", "/nonexistent/schedstat")
    assert busyloop.run_delay_s() is None
    _, _, waits = busyloop.busy_loop(0.01)
    assert waits is None


def test_parse_refuses_a_probe_not_pinned_to_its_cpu() -> None:
    with pytest.raises(ValueError, match=r"for CPU 1 was allowed on CPUs \[0, 1\]: not pinned"):
        parse_probe_output(_line(cpus=[0, 1]), 1)
    with pytest.raises(ValueError, match="not pinned"):
        parse_probe_output(_line(cpus=[0]), 1)


def test_parse_of_the_unpinned_probe_accepts_any_cpus() -> None:
    assert parse_probe_output(_line(cpus=[0, 1]), None).cpu is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "printed nothing"),
        ("Traceback (most recent call last):", "printed 'Traceback"),
        (json.dumps({"gaps_s": [], "cpus": [0]}), "duration_s"),
        (json.dumps({"duration_s": 3, "gaps_s": []}), "cpus"),
        (_line(gaps=None), "printed"),
        (_line(duration=0), "impossible"),
        (_line(gaps=[-0.001]), "impossible"),
        (json.dumps({"duration_s": 3, "gaps_s": [0.002], "waited_s": [], "cpus": [1]}), "impos"),
        (json.dumps({"duration_s": 3, "gaps_s": [0.002], "waited_s": [-1], "cpus": [1]}), "impos"),
    ],
)
def test_parse_refuses_what_the_probe_cannot_have_printed(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_probe_output(text, 1)


def test_busy_loop_runs_for_its_duration_and_keeps_only_long_gaps() -> None:
    elapsed, gaps, waits = busyloop.busy_loop(0.05)
    assert 0.05 <= elapsed < 1.0
    assert all(g > busyloop.RECORD_THRESHOLD_S for g in gaps)
    assert waits is None or len(waits) == len(gaps)


def test_busy_loop_waits_for_its_start_then_loops_its_duration() -> None:
    before = time.monotonic()
    elapsed, gaps, _ = busyloop.busy_loop(0.05, before + 0.2)
    after = time.monotonic()
    assert 0.05 <= elapsed < 0.5
    assert after - before >= 0.25  # the sleep until the start is not in elapsed
    assert all(g < 0.1 for g in gaps)  # nor among the gaps


def test_busy_loop_started_late_still_loops_its_duration() -> None:
    elapsed, _, _ = busyloop.busy_loop(0.05, time.monotonic() - 10)
    assert 0.05 <= elapsed < 0.5


def test_busy_loop_script_prints_its_cpus(capsys: pytest.CaptureFixture[str]) -> None:
    assert busyloop.main(["0.01", repr(time.monotonic())]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cpus"] == sorted(os.sched_getaffinity(0))
    assert data["duration_s"] >= 0.01


def test_busy_loop_script_refuses_a_missing_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert busyloop.main([]) == 2
    assert "usage: python bench/busyloop.py SECONDS [START]" in capsys.readouterr().err


# --------------------------------------------------------------------------- report


# --------------------------------------------------------------------------- option


def test_option_defaults_to_unset_and_accepts_zero() -> None:
    assert proxy.parse_args([]).stall_probe is None
    assert proxy.parse_args(["--stall-probe", "0"]).stall_probe == 0.0
    assert proxy.parse_args(["--stall-probe", "2.5"]).stall_probe == 2.5


@pytest.mark.parametrize("value", ["-1", "61", "soon"])
def test_option_refuses_bad_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        proxy.parse_args(["--stall-probe", value])
    assert exc.value.code == 2
    assert f"--stall-probe: expected seconds from 0 (skip) to 60; got '{value}'" in (
        capsys.readouterr().err
    )


def test_budget_counts_the_probe_only_with_fixed_rate_runs() -> None:
    def budget(*argv: str) -> float:
        return proxy._budget(proxy.parse_args(["--duration", "10", "--warmup", "2", *argv]))

    assert budget("--stall-probe", "5") - budget("--stall-probe", "0") == pytest.approx(35)
    assert budget("--stall-probe", "5", "--fixed-rate", "off") == budget(
        "--stall-probe", "0", "--fixed-rate", "off"
    )
