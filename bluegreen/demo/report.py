"""The demo's accounting and report: request records in, tables and one JSON object out.

PURE: no I/O, no clock, no asyncio/aiohttp/asyncpg. The load generator
(:mod:`bluegreen.demo.load`) produces :class:`RequestRecord` values and a
timeline of :class:`TimelineEntry`; :func:`account` turns them into an
:class:`Accounting`; :func:`render_text` and :func:`render_json` turn an
:class:`DemoReport` (the accounting plus what the orchestrator measured:
outcome, migration durations, detection and fallback times) into the
report.

A request **failed** when it got no response (connection error, timeout,
disconnect) or a 5xx. 4xx answers are the client's business (an order id
that a failed insert never created gives 404) and are counted, not failed.
Every record belongs to the timeline segment that was current when the
request *started*: a request sent at 10 % and answered after the switch to
50 % counts for 10 %.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

UNKNOWN_COLOUR: Final = "unknown"  # no X-App-Version: no response, or the proxy answered itself
COLOUR_ORDER: Final = ("blue", "green", UNKNOWN_COLOUR)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the client saw it. Times are seconds since the load started."""

    start: float
    latency: float
    operation: str  # "get", "create", "update"
    method: str
    idempotent: bool
    status: int | None  # None: no response
    error: str | None  # "connect", "timeout", "disconnected", ... when status is None
    colour: str  # from the response's X-App-Version; UNKNOWN_COLOUR without one
    segment: int  # index of the timeline entry current at ``start``

    @property
    def failed(self) -> bool:
        """No response, or a 5xx."""
        return self.status is None or self.status >= 500

    @property
    def outcome(self) -> str:
        """``2xx``/``3xx``/``4xx`` when it succeeded; the status (``500``) or error kind if not."""
        if self.status is None:
            return self.error or "error"
        if self.status >= 500:
            return str(self.status)
        return f"{self.status // 100}xx"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """The rollout entered ``phase`` with green at ``green_weight`` percent, at ``at`` seconds."""

    at: float
    phase: str
    green_weight: float
    note: str = ""

    @property
    def label(self) -> str:
        """``ramp 10%``: the phase and green's weight."""
        return f"{self.phase} {_percent(self.green_weight)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "at_seconds": round(self.at, 3),
            "phase": self.phase,
            "green_weight": self.green_weight,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Tally:
    """Requests and failures of one group (a colour, a segment, a segment's colour)."""

    requests: int = 0
    failed: int = 0
    failed_idempotent: int = 0
    failed_non_idempotent: int = 0
    outcomes: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "requests": self.requests,
            "failed_requests": self.failed,
            "failed_idempotent": self.failed_idempotent,
            "failed_non_idempotent": self.failed_non_idempotent,
            "outcomes": dict(sorted(self.outcomes.items())),
        }


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency quantiles in seconds over the responses of one colour (nearest rank)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form, in milliseconds."""
        return {
            "count": self.count,
            "p50_ms": _ms(self.p50),
            "p90_ms": _ms(self.p90),
            "p99_ms": _ms(self.p99),
            "max_ms": _ms(self.max),
        }


@dataclass(frozen=True, slots=True)
class SegmentAccount:
    """One timeline segment: its entry, its span, and its tallies (total and per colour)."""

    entry: TimelineEntry
    end: float
    total: Tally
    colours: Mapping[str, Tally]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            **self.entry.to_dict(),
            "seconds": round(max(0.0, self.end - self.entry.at), 3),
            **self.total.to_dict(),
            "colours": {c: t.to_dict() for c, t in self.colours.items()},
        }


@dataclass(frozen=True, slots=True)
class Accounting:
    """Everything counted from the records."""

    total: Tally
    duration: float  # seconds from the load's start to its last answer
    segments: tuple[SegmentAccount, ...]
    colours: Mapping[str, Tally]
    latency: Mapping[str, Latency]
    timeline: tuple[TimelineEntry, ...]

    @property
    def requests(self) -> int:
        """All requests sent."""
        return self.total.requests

    @property
    def failed_requests(self) -> int:
        """Requests without a response or with a 5xx."""
        return self.total.failed

    @property
    def rate(self) -> float:
        """Requests per second achieved."""
        return self.total.requests / self.duration if self.duration > 0 else 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ascending values; 0.0 when empty."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def _tally(records: Iterable[RequestRecord]) -> Tally:
    requests = failed = failed_idem = failed_non = 0
    outcomes: Counter[str] = Counter()
    for record in records:
        requests += 1
        outcomes[record.outcome] += 1
        if record.failed:
            failed += 1
            if record.idempotent:
                failed_idem += 1
            else:
                failed_non += 1
    return Tally(requests, failed, failed_idem, failed_non, dict(outcomes))


def _colour_key(colour: str) -> tuple[int, str]:
    return (
        (COLOUR_ORDER.index(colour), "") if colour in COLOUR_ORDER else (len(COLOUR_ORDER), colour)
    )


def _by_colour(records: Sequence[RequestRecord]) -> dict[str, Tally]:
    colours = sorted({r.colour for r in records}, key=_colour_key)
    return {c: _tally(r for r in records if r.colour == c) for c in colours}


def latency_of(latencies: Iterable[float]) -> Latency:
    """Quantiles of some latencies (seconds)."""
    values = sorted(latencies)
    return Latency(
        count=len(values),
        p50=percentile(values, 0.50),
        p90=percentile(values, 0.90),
        p99=percentile(values, 0.99),
        max=values[-1] if values else 0.0,
    )


def account(
    records: Sequence[RequestRecord], timeline: Sequence[TimelineEntry], *, end: float | None = None
) -> Accounting:
    """Count ``records`` per timeline segment and per colour.

    ``end`` closes the last segment (default: the last answer). Latency is
    over every request that got a response, per colour.
    """
    if not timeline:
        timeline = (TimelineEntry(0.0, "load", 0.0),)
    last_answer = max((r.start + r.latency for r in records), default=0.0)
    stop = max(end if end is not None else last_answer, timeline[-1].at)
    by_segment: dict[int, list[RequestRecord]] = {}
    for record in records:
        index = min(max(record.segment, 0), len(timeline) - 1)
        by_segment.setdefault(index, []).append(record)
    segments = []
    for index, entry in enumerate(timeline):
        seg_records = by_segment.get(index, [])
        seg_end = timeline[index + 1].at if index + 1 < len(timeline) else stop
        segments.append(
            SegmentAccount(entry, seg_end, _tally(seg_records), _by_colour(seg_records))
        )
    answered: dict[str, list[float]] = {}
    for record in records:
        if record.status is not None:
            answered.setdefault(record.colour, []).append(record.latency)
    latency = {c: latency_of(answered[c]) for c in sorted(answered, key=_colour_key)}
    return Accounting(
        total=_tally(records),
        duration=stop,
        segments=tuple(segments),
        colours=_by_colour(records),
        latency=latency,
        timeline=tuple(timeline),
    )


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class MigrationTiming:
    """How long one migration took during the demo."""

    name: str
    phase: str
    seconds: float
    outcome: str = "applied"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "phase": self.phase,
            "seconds": round(self.seconds, 3),
            "outcome": self.outcome,
        }


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What ``bluegreen demo`` prints: the accounting and what the orchestrator measured.

    ``detection_seconds``: green started failing -> the controller decided to
    fall back; ``fallback_seconds``: green started failing -> green's weight
    at 0 on every replica. Both only for a failure variant.
    """

    outcome: str  # "promoted", "rolled_back", "aborted", "failed", ...
    accounting: Accounting
    migrations: tuple[MigrationTiming, ...] = ()
    detection_seconds: float | None = None
    fallback_seconds: float | None = None
    reason: str | None = None
    variant: str | None = None  # "break green", "kill green"
    notes: tuple[str, ...] = ()
    expected_outcome: str = "promoted"
    allowed_failures: int = 0  # the failures the variant may cost (non-idempotent, e.g.)

    @property
    def ok(self) -> bool:
        """The expected outcome, with no more failures than allowed."""
        return (
            self.outcome == self.expected_outcome
            and self.accounting.failed_requests <= self.allowed_failures
        )


def _percent(weight: float) -> str:
    return f"{weight:g}%"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Iterable[int] = ()
) -> list[str]:
    aligned_right = set(right)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in aligned_right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  " + "  ".join(parts).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _n(value: int) -> str:
    return f"{value:,}"


def _failures_cell(tally: Tally) -> str:
    if not tally.failed:
        return "0"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(tally.outcomes.items()) if not k.endswith("xx"))
    return f"{_n(tally.failed)} ({kinds})"


def render_text(report: DemoReport) -> str:
    """The report for people: headline, timeline, requests, latency, migrations, fallback."""
    acc = report.accounting
    verdict = "OK" if report.ok else "FAILED"
    head = f"bluegreen demo: {report.outcome}"
    if report.variant:
        head += f" ({report.variant})"
    lines = [
        f"{head} - {_n(acc.failed_requests)} of {_n(acc.requests)} requests failed [{verdict}]",
    ]
    if report.reason:
        lines.append(f"  reason: {report.reason}")
    lines += ["", "Timeline"]
    lines += _table(
        ("t", "phase", "green", "note"),
        [(f"{e.at:.1f}s", e.phase, _percent(e.green_weight), e.note) for e in acc.timeline],
        right=(0, 2),
    )
    lines += ["", "Requests by phase and colour"]
    rows: list[tuple[str, ...]] = []
    for seg in acc.segments:
        label = f"{seg.entry.at:.1f}s {seg.entry.label}"
        if not seg.colours:
            rows.append((label, "-", "0", "0"))
        for i, (colour, tally) in enumerate(seg.colours.items()):
            rows.append(
                (label if i == 0 else "", colour, _n(tally.requests), _failures_cell(tally))
            )
    rows.append(("total", "", _n(acc.requests), _failures_cell(acc.total)))
    lines += _table(("phase", "colour", "requests", "failed"), rows, right=(2,))
    lines += [
        "",
        f"  {_n(acc.requests)} requests in {acc.duration:.1f}s ({acc.rate:.0f}/s); failed: "
        f"{_n(acc.total.failed_idempotent)} idempotent, "
        f"{_n(acc.total.failed_non_idempotent)} non-idempotent",
    ]
    if acc.latency:
        lines += ["", "Latency by colour (requests that got a response)"]
        lines += _table(
            ("colour", "responses", "p50", "p99", "max"),
            [
                (c, _n(lat.count), _fmt_ms(lat.p50), _fmt_ms(lat.p99), _fmt_ms(lat.max))
                for c, lat in acc.latency.items()
            ],
            right=(1, 2, 3, 4),
        )
    if report.migrations:
        lines += ["", "Migrations"]
        lines += _table(
            ("migration", "phase", "seconds", "outcome"),
            [(m.name, m.phase, f"{m.seconds:.3f}", m.outcome) for m in report.migrations],
            right=(2,),
        )
    if report.detection_seconds is not None or report.fallback_seconds is not None:
        lines += ["", "Fallback"]
        if report.detection_seconds is not None:
            lines.append(f"  detected {report.detection_seconds:.2f}s after green started failing")
        if report.fallback_seconds is not None:
            lines.append(
                f"  green at 0% {report.fallback_seconds:.2f}s after green started failing"
            )
    if report.notes:
        lines += ["", *(f"  note: {n}" for n in report.notes)]
    return "\n".join(lines) + "\n"


def report_to_dict(report: DemoReport) -> dict[str, Any]:
    """The report as one JSON-ready object (``outcome``, ``requests``, ``failed_requests``...)."""
    acc = report.accounting
    data: dict[str, Any] = {
        "outcome": report.outcome,
        "ok": report.ok,
        "variant": report.variant,
        "reason": report.reason,
        "requests": acc.requests,
        "failed_requests": acc.failed_requests,
        "failed_idempotent": acc.total.failed_idempotent,
        "failed_non_idempotent": acc.total.failed_non_idempotent,
        "duration_seconds": round(acc.duration, 3),
        "requests_per_second": round(acc.rate, 1),
    }
    if report.detection_seconds is not None:
        data["detection_seconds"] = round(report.detection_seconds, 3)
    if report.fallback_seconds is not None:
        data["fallback_seconds"] = round(report.fallback_seconds, 3)
    data["timeline"] = [e.to_dict() for e in acc.timeline]
    data["phases"] = [s.to_dict() for s in acc.segments]
    data["colours"] = {
        c: {**t.to_dict(), "latency": acc.latency[c].to_dict() if c in acc.latency else None}
        for c, t in acc.colours.items()
    }
    data["migrations"] = [m.to_dict() for m in report.migrations]
    data["notes"] = list(report.notes)
    return data


def render_json(report: DemoReport) -> str:
    """:func:`report_to_dict` as one line of JSON."""
    return json.dumps(report_to_dict(report), separators=(",", ":"))
