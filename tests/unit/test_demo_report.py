"""The demo's accounting and report rendering, on synthetic records."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import bluegreen.demo.report as report_module
from bluegreen.demo.report import (
    UNKNOWN_COLOUR,
    DemoReport,
    MigrationTiming,
    RequestRecord,
    TimelineEntry,
    account,
    percentile,
    render_json,
    render_text,
    report_to_dict,
)

TIMELINE = (
    TimelineEntry(0.0, "idle", 0),
    TimelineEntry(2.0, "ramp", 10),
    TimelineEntry(4.0, "ramp", 50, "green starts failing"),
    TimelineEntry(5.0, "rolling_back", 0),
)


def rec(
    start: float,
    *,
    colour: str = "blue",
    status: int | None = 200,
    error: str | None = None,
    method: str = "GET",
    latency: float = 0.01,
    segment: int = 0,
) -> RequestRecord:
    return RequestRecord(
        start=start,
        latency=latency,
        operation={"GET": "get", "POST": "create", "PATCH": "update"}[method],
        method=method,
        idempotent=method == "GET",
        status=status,
        error=error,
        colour=colour,
        segment=segment,
    )


def sample() -> list[RequestRecord]:
    return [
        rec(0.1),
        rec(0.2, method="POST", status=201),
        rec(2.1, segment=1),
        rec(2.2, colour="green", segment=1, latency=0.03),
        rec(4.1, colour="green", status=500, segment=2),
        rec(4.2, colour="green", status=500, method="POST", segment=2),
        rec(4.3, colour=UNKNOWN_COLOUR, status=None, error="connect", segment=2),
        rec(4.4, status=404, segment=2),
        rec(5.5, segment=3, latency=0.2),
    ]


def test_totals_split_failures_by_idempotency() -> None:
    acc = account(sample(), TIMELINE)
    assert acc.requests == 9
    assert acc.failed_requests == 3
    assert acc.total.failed_idempotent == 2  # the GET 500 and the connect error
    assert acc.total.failed_non_idempotent == 1  # the POST 500


def test_a_4xx_is_counted_but_not_a_failure() -> None:
    acc = account([rec(0.1, status=404)], TIMELINE[:1])
    assert acc.failed_requests == 0
    assert acc.total.outcomes == {"4xx": 1}


@pytest.mark.parametrize(
    ("status", "error", "outcome", "failed"),
    [
        (200, None, "2xx", False),
        (302, None, "3xx", False),
        (422, None, "4xx", False),
        (500, None, "500", True),
        (503, None, "503", True),
        (None, "timeout", "timeout", True),
        (None, None, "error", True),
    ],
    ids=["200", "302", "422", "500", "503", "timeout", "no-detail"],
)
def test_record_outcome(status: int | None, error: str | None, outcome: str, failed: bool) -> None:
    record = rec(0, status=status, error=error)
    assert record.outcome == outcome
    assert record.failed is failed


def test_records_count_for_the_segment_they_started_in() -> None:
    acc = account(sample(), TIMELINE)
    assert [s.total.requests for s in acc.segments] == [2, 2, 4, 1]
    assert [s.total.failed for s in acc.segments] == [0, 0, 3, 0]
    ramp50 = acc.segments[2]
    assert ramp50.entry.note == "green starts failing"
    assert ramp50.colours["green"].failed == 2
    assert ramp50.colours[UNKNOWN_COLOUR].outcomes == {"connect": 1}
    assert list(ramp50.colours) == ["blue", "green", UNKNOWN_COLOUR]  # fixed colour order


def test_segments_span_to_the_next_entry_and_the_last_to_the_end() -> None:
    acc = account(sample(), TIMELINE, end=8.0)
    assert [(s.entry.at, s.end) for s in acc.segments] == [
        (0.0, 2.0),
        (2.0, 4.0),
        (4.0, 5.0),
        (5.0, 8.0),
    ]
    assert acc.duration == 8.0
    assert acc.rate == pytest.approx(9 / 8.0)


def test_without_an_end_the_last_answer_closes_the_run() -> None:
    acc = account(sample(), TIMELINE)
    assert acc.duration == pytest.approx(5.5 + 0.2)


def test_per_colour_tallies_add_up_to_the_total() -> None:
    acc = account(sample(), TIMELINE)
    assert sum(t.requests for t in acc.colours.values()) == acc.requests
    assert sum(t.failed for t in acc.colours.values()) == acc.failed_requests
    assert acc.colours["blue"].requests == 5


def test_latency_is_per_colour_over_answered_requests_only() -> None:
    records = [rec(i * 0.01, latency=(i + 1) / 1000) for i in range(100)]
    records.append(rec(1.5, status=None, error="timeout", latency=5.0))
    acc = account(records, TIMELINE[:1])
    blue = acc.latency["blue"]
    assert blue.count == 100
    assert blue.p50 == pytest.approx(0.050)
    assert blue.p99 == pytest.approx(0.099)
    assert blue.max == pytest.approx(0.100)
    assert UNKNOWN_COLOUR not in acc.latency  # the timeout had no response


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, 0.0),
        ([3.0], 0.99, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.75, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 1.0, 4.0),
    ],
    ids=["empty", "single", "median-even", "p75", "max"],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5], ids=["zero", "negative", "above-one"])
def test_percentile_rejects_quantiles_outside_zero_one(q: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        percentile([1.0], q)


def test_an_empty_timeline_becomes_one_segment() -> None:
    acc = account([rec(0.1)], ())
    assert len(acc.segments) == 1
    assert acc.segments[0].total.requests == 1


def test_out_of_range_segments_are_clamped() -> None:
    acc = account([rec(0.1, segment=7)], TIMELINE[:2])
    assert acc.segments[1].total.requests == 1


def report(outcome: str = "promoted", **kwargs: object) -> DemoReport:
    return DemoReport(outcome=outcome, accounting=account(sample(), TIMELINE), **kwargs)  # type: ignore[arg-type]


def test_ok_needs_the_expected_outcome_and_no_more_failures_than_allowed() -> None:
    assert not report().ok  # 3 failures
    assert report(allowed_failures=3).ok
    assert not report("rolled_back", allowed_failures=3).ok
    assert report("rolled_back", expected_outcome="rolled_back", allowed_failures=3).ok
    clean = DemoReport("promoted", account([rec(0.1)], TIMELINE[:1]))
    assert clean.ok


def test_text_report_has_every_table() -> None:
    text = render_text(
        report(
            "rolled_back",
            variant="break green",
            reason="green 5xx rate 50% above blue's 0%",
            migrations=(MigrationTiming("0002_expand", "expand", 0.0123),),
            detection_seconds=1.234,
            fallback_seconds=1.5,
            notes=("logs in /tmp/x",),
        )
    )
    assert text.startswith("bluegreen demo: rolled_back (break green) - 3 of 9 requests failed")
    for heading in (
        "Timeline",
        "Requests by phase and colour",
        "Latency by colour",
        "Migrations",
        "Fallback",
    ):
        assert f"\n{heading}" in text
    assert "reason: green 5xx rate" in text
    assert "4.0s ramp 50%" in text
    assert "green starts failing" in text
    assert "3 (500 2, connect 1)" in text  # the total row names the failure kinds
    assert "failed: 2 idempotent, 1 non-idempotent" in text
    assert "0002_expand" in text
    assert "0.012" in text
    assert "detected 1.23s after green started failing" in text
    assert "green at 0% 1.50s after" in text
    assert "note: logs in /tmp/x" in text


def test_text_report_of_a_clean_run_says_ok() -> None:
    clean = DemoReport("promoted", account([rec(0.1), rec(0.2)], TIMELINE[:1]))
    text = render_text(clean)
    assert text.splitlines()[0] == "bluegreen demo: promoted - 0 of 2 requests failed [OK]"
    assert "Fallback" not in text


def test_json_report_is_one_object_with_the_documented_keys() -> None:
    data = json.loads(render_json(report("rolled_back", fallback_seconds=1.5)))
    assert data["outcome"] == "rolled_back"
    assert data["requests"] == 9
    assert data["failed_requests"] == 3
    assert data["fallback_seconds"] == 1.5
    assert "detection_seconds" not in data
    assert data["failed_idempotent"] == 2
    assert data["failed_non_idempotent"] == 1
    assert [p["green_weight"] for p in data["phases"]] == [0, 10, 50, 0]
    assert data["phases"][2]["colours"]["green"]["failed_requests"] == 2
    assert data["colours"]["blue"]["latency"]["count"] == 5
    assert data["colours"][UNKNOWN_COLOUR]["latency"] is None
    assert "\n" not in render_json(report())


def test_json_omits_fallback_when_there_was_none() -> None:
    assert "fallback_seconds" not in report_to_dict(report())


def test_report_is_pure() -> None:
    code = (
        "import sys, bluegreen.demo.report; "
        "bad = [m for m in ('asyncio', 'aiohttp', 'asyncpg') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_report_reads_no_clock_randomness_or_environment() -> None:
    tree = ast.parse(Path(report_module.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"asyncio", "aiohttp", "asyncpg", "time", "datetime", "random", "os"}
