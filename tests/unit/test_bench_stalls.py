"""bench.stalls and bench.busyloop: the host-stall probe's output, figures and report."""

from __future__ import annotations

import json

import pytest

from bench import busyloop, proxy
from bench.report import Report, host_stall_note, render, to_json
from bench.stalls import CpuStalls, parse_probe_output


def test_figures_count_only_gaps_over_one_ms() -> None:
    cpu = CpuStalls(1, 3.0, (0.0006, 0.0011, 0.0045, 0.0009))
    assert cpu.gaps_over_1ms == 2
    assert cpu.lost_s == pytest.approx(0.0071)
    assert cpu.longest_s == 0.0045


def test_no_gaps_is_zero_everywhere() -> None:
    cpu = CpuStalls(0, 3.0, ())
    assert (cpu.gaps_over_1ms, cpu.lost_s, cpu.longest_s) == (0, 0.0, 0.0)


def test_parse_reads_the_last_json_line() -> None:
    text = "some warning\n" + json.dumps({"duration_s": 3.0001, "gaps_s": [0.002, 0.0007]})
    assert parse_probe_output(text, 1) == CpuStalls(1, 3.0001, (0.002, 0.0007))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "printed nothing"),
        ("Traceback (most recent call last):", "printed 'Traceback"),
        (json.dumps({"gaps_s": []}), "duration_s"),
        (json.dumps({"duration_s": 3, "gaps_s": None}), "printed"),
        (json.dumps({"duration_s": 0, "gaps_s": []}), "impossible"),
        (json.dumps({"duration_s": 3, "gaps_s": [-0.001]}), "impossible"),
    ],
)
def test_parse_refuses_what_the_probe_cannot_have_printed(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_probe_output(text, 0)


def test_busy_loop_runs_for_its_duration_and_keeps_only_long_gaps() -> None:
    elapsed, gaps = busyloop.busy_loop(0.05)
    assert 0.05 <= elapsed < 1.0
    assert all(g > busyloop.RECORD_THRESHOLD_S for g in gaps)


def test_busy_loop_script_refuses_a_missing_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert busyloop.main([]) == 2
    assert "usage: python bench/busyloop.py SECONDS" in capsys.readouterr().err


# --------------------------------------------------------------------------- report


def test_note_only_when_a_stall_reaches_the_budget() -> None:
    assert host_stall_note([CpuStalls(0, 3.0, (0.0019,)), CpuStalls(1, 3.0, ())]) is None
    note = host_stall_note([CpuStalls(0, 3.0, (0.0019,)), CpuStalls(1, 3.0, (0.0068,))])
    assert note is not None
    assert "up to 6.80 ms" in note
    assert "2.00 ms p99 budget" in note
    assert host_stall_note([]) is None


def test_render_shows_one_row_per_cpu() -> None:
    report = Report(host_stalls=[CpuStalls(0, 3.0, (0.0011, 0.004)), CpuStalls(1, 3.0, ())])
    lines = render(report).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Host stalls:"))
    assert "every CPU at once for 3.0 s" in lines[start]
    assert lines[start + 1].split() == ["CPU", "gaps", ">", "1", "ms", "time", "lost", "longest"]
    assert lines[start + 3].split() == ["0", "2", "5.10", "ms", "4.00", "ms"]
    assert lines[start + 4].split() == ["1", "0", "0", "µs", "0", "µs"]


def test_render_has_no_section_when_not_probed() -> None:
    assert "Host stalls" not in render(Report())


def test_json_carries_the_figures_or_null() -> None:
    assert to_json(Report())["host_stalls"] is None
    data = to_json(Report(host_stalls=[CpuStalls(1, 3.0, (0.0005001, 0.003))]))
    json.dumps(data)
    assert data["host_stalls"] == [
        {
            "cpu": 1,
            "duration_s": 3.0,
            "gaps_over_1ms": 1,
            "lost_s": pytest.approx(0.0035001),
            "longest_s": 0.003,
        }
    ]


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
