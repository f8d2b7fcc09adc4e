"""Backfill progress: the bar, the log lines, and when the reporter shows them."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from bluegreen.migrations.progress import (
    BackfillProgress,
    ProgressReporter,
    format_duration,
    log_fields,
    render_bar,
)

P = BackfillProgress(
    migration="0003_copy",
    statement_index=0,
    table="orders",
    rows_done=41_000,
    batches=41,
    elapsed=4.2,
    rows_per_second=9_870.4,
    fraction=0.41,
    eta_seconds=6.04,
    position="41000",
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "?"), (float("inf"), "?"), (0.4, "0s"), (42, "42s"), (185, "3m05s"), (7260, "2h01m")],
    ids=["unknown", "infinite", "zero", "seconds", "minutes", "hours"],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_bar_while_running() -> None:
    assert render_bar(P, width=10) == (
        "orders [####......]  41.0%  41,000 rows  9,870 rows/s  ETA 6s"
    )


def test_bar_unknown_fraction_throttled_and_finished() -> None:
    unknown = render_bar(replace(P, fraction=None, eta_seconds=None), width=4)
    assert unknown == "orders [????]    ?    41,000 rows  9,870 rows/s  ETA ?"
    waiting = render_bar(replace(P, throttled="replica replay lag 12.0s > max-lag 10s"), width=4)
    assert waiting.endswith("waiting: replica replay lag 12.0s > max-lag 10s")
    done = render_bar(replace(P, finished=True, fraction=0.93, elapsed=65), width=4)
    assert done == "orders [####] 100.0%  41,000 rows  9,870 rows/s  done in 1m05s"


def test_log_fields() -> None:
    assert log_fields(P) == {
        "migration": "0003_copy",
        "statement_index": 0,
        "table": "orders",
        "rows_done": 41_000,
        "batches": 41,
        "rows_per_second": 9870.4,
        "elapsed_seconds": 4.2,
        "position": "41000",
        "finished": False,
        "percent": 41.0,
        "eta_seconds": 6.0,
    }
    throttled = log_fields(replace(P, fraction=None, eta_seconds=None, throttled="lag"))
    assert "percent" not in throttled
    assert "eta_seconds" not in throttled
    assert throttled["throttled"] == "lag"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tty_redraws_in_place_at_most_every_interval() -> None:
    stream, clock = io.StringIO(), Clock()
    reporter = ProgressReporter(stream, tty=True, clock=clock, bar_interval=0.2)
    reporter(P)
    clock.now += 0.1
    reporter(replace(P, rows_done=42_000))  # too soon: skipped
    clock.now += 0.2
    reporter(replace(P, rows_done=43_000))
    out = stream.getvalue()
    assert out.count("\r") == 2
    assert "42,000" not in out
    assert out.endswith("\x1b[K")
    reporter(replace(P, finished=True))  # the end is always shown, on its own line
    assert stream.getvalue().endswith("done in 4s\x1b[K\n")
    reporter.close()  # nothing half-drawn any more
    assert stream.getvalue().endswith("\n")
    assert not stream.getvalue().endswith("\n\n")


def test_tty_shows_a_change_of_throttling_at_once_and_close_ends_the_line() -> None:
    stream, clock = io.StringIO(), Clock()
    reporter = ProgressReporter(stream, tty=True, clock=clock)
    reporter(P)
    reporter(replace(P, throttled="lock waits"))
    assert stream.getvalue().count("\r") == 2
    reporter.close()
    assert stream.getvalue().endswith("\x1b[K\n")


def test_elsewhere_logs_structured_lines() -> None:
    stream, clock = io.StringIO(), Clock()
    reporter = ProgressReporter(stream, tty=False, clock=clock, log_interval=10)
    with capture_logs() as logs:
        reporter(P)
        clock.now += 5
        reporter(replace(P, rows_done=50_000))  # within the interval: skipped
        reporter(replace(P, throttled="lag"))  # a change: shown
        clock.now += 1
        reporter(replace(P, finished=True))
    assert stream.getvalue() == ""
    assert [e["event"] for e in logs] == ["backfill_progress"] * 3
    assert [e["rows_done"] for e in logs] == [41_000, 41_000, 41_000]
    assert logs[1]["throttled"] == "lag"
    assert logs[2]["finished"] is True
    assert logs[0]["log_level"] == "info"


def test_progress_module_loads_no_database_or_http_client() -> None:
    # (structlog itself imports asyncio, so that one cannot be checked here)
    code = (
        "import sys, bluegreen.migrations.progress; "
        "print(sorted({'asyncpg', 'aiohttp'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
