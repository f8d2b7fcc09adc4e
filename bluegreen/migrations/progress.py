"""Progress of a batched backfill: a bar on a terminal, structured log lines elsewhere.

:class:`BackfillProgress` is a plain value the backfill hands to a callback
after every batch (and while it is throttled). :class:`ProgressReporter` is
the default callback: on a TTY it redraws one line in place (at most every
``bar_interval`` seconds); elsewhere it logs a ``backfill_progress`` event
every ``log_interval`` seconds, whenever throttling starts or stops, and at
the end. Rendering is pure; the reporter takes its clock as an argument.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import structlog


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    """Where a backfill stands after a batch.

    ``rows_done`` counts rows updated since the backfill first started
    (across resumed runs); ``rows_per_second`` is this run's rate.
    ``fraction`` is how much of the table has been walked (0..1, None when
    unknown) and ``eta_seconds`` the time left at this run's walking speed.
    ``position`` is the last key (or heap page) done; ``throttled`` says why
    the backfill is waiting, if it is.
    """

    migration: str
    statement_index: int
    table: str
    rows_done: int
    batches: int
    elapsed: float
    rows_per_second: float
    fraction: float | None
    eta_seconds: float | None
    position: str | None
    throttled: str | None = None
    finished: bool = False


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h01m``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def render_bar(progress: BackfillProgress, width: int = 24) -> str:
    """One terminal line: ``orders [#####.....]  41.0%  41,000 rows  9,870 rows/s  ETA 6s``."""
    fraction = 1.0 if progress.finished else progress.fraction
    if fraction is None:
        bar = "?" * width
        percent = "   ?  "
    else:
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        percent = f"{fraction * 100:5.1f}%"
    if progress.finished:
        tail = f"done in {format_duration(progress.elapsed)}"
    elif progress.throttled:
        tail = f"waiting: {progress.throttled}"
    else:
        tail = f"ETA {format_duration(progress.eta_seconds)}"
    return (
        f"{progress.table} [{bar}] {percent}  {progress.rows_done:,} rows  "
        f"{progress.rows_per_second:,.0f} rows/s  {tail}"
    )


def log_fields(progress: BackfillProgress) -> dict[str, Any]:
    """The key/values of a ``backfill_progress`` log event."""
    fields: dict[str, Any] = {
        "migration": progress.migration,
        "statement_index": progress.statement_index,
        "table": progress.table,
        "rows_done": progress.rows_done,
        "batches": progress.batches,
        "rows_per_second": round(progress.rows_per_second, 1),
        "elapsed_seconds": round(progress.elapsed, 3),
        "position": progress.position,
        "finished": progress.finished,
    }
    if progress.fraction is not None:
        fields["percent"] = round(min(max(progress.fraction, 0.0), 1.0) * 100, 1)
    if progress.eta_seconds is not None:
        fields["eta_seconds"] = round(progress.eta_seconds, 1)
    if progress.throttled:
        fields["throttled"] = progress.throttled
    return fields


class ProgressReporter:
    """The default progress callback: a bar on a TTY, log lines otherwise."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        bar_interval: float = 0.2,
        log_interval: float = 10.0,
        logger: Any = None,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._clock = clock
        self._interval = bar_interval if self._tty else log_interval
        self._log = logger if logger is not None else structlog.get_logger("bluegreen.backfill")
        self._last_emit: float | None = None
        self._last_throttled: str | None = None
        self._drawn = False

    def __call__(self, progress: BackfillProgress) -> None:
        """Show ``progress`` if it is time to (always on a change of state or at the end)."""
        now = self._clock()
        changed = progress.throttled != self._last_throttled
        self._last_throttled = progress.throttled
        due = self._last_emit is None or now - self._last_emit >= self._interval
        if not (due or changed or progress.finished):
            return
        self._last_emit = now
        if self._tty:
            end = "\n" if progress.finished else ""
            # \r returns to column 0; ESC[K clears what a longer previous line left
            self._stream.write(f"\r{render_bar(progress)}\x1b[K{end}")
            self._stream.flush()
            self._drawn = not progress.finished
        else:
            self._log.info("backfill_progress", **log_fields(progress))

    def close(self) -> None:
        """End a half-drawn bar line (after an error) so the next output starts clean."""
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
