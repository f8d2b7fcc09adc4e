"""Pure: the benchmark's results, best-of selection, ratios against nginx, the table and JSON.

Nothing here measures anything; bench/proxy.py fills these values in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.stalls import CpuStalls
from bench.stats import RateResult
from bench.wrk import WrkResult, describe_errors

TARGETS = ("direct", "nginx", "bluegreen")
REFERENCE = "nginx"
# The proxies compared in the latency-vs-load summary, reference first.
PROXIES = ("nginx", "bluegreen")
# Issue 8: the p99 latency a proxy may add over direct at a given rate.
P99_ADDED_BUDGET_S = 0.002


@dataclass(frozen=True, slots=True)
class Throughput:
    """One closed-loop wrk run against one target and payload."""

    target: str
    payload: str
    wrk: WrkResult
    wall_s: float
    # CPU seconds of the proxy's processes during the run (None for "direct").
    proxy_cpu_s: float | None
    upstream_cpu_s: float
    other_cpu_s: float = 0.0
    proxy_processes: int = 0

    @property
    def cpu_us_per_request(self) -> float | None:
        """The proxy's CPU time per request, in microseconds."""
        if self.proxy_cpu_s is None or not self.wrk.requests:
            return None
        return self.proxy_cpu_s / self.wrk.requests * 1e6

    @property
    def upstream_us_per_request(self) -> float | None:
        """The upstream's CPU time per request, in microseconds."""
        return self.upstream_cpu_s / self.wrk.requests * 1e6 if self.wrk.requests else None

    @property
    def busy(self) -> float | None:
        """The proxy's CPU time as a fraction of one core over the run."""
        if self.proxy_cpu_s is None or self.wall_s <= 0:
            return None
        return self.proxy_cpu_s / self.wall_s

    @property
    def other_cores(self) -> float:
        """CPU used by anything else on the machine during the run, in cores (noise)."""
        return self.other_cpu_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class FixedRate:
    """One open-loop run at a fixed rate against one target."""

    target: str
    payload: str
    result: RateResult
    proxy_cpu_s: float | None
    other_cores: float = 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        """The proxy's CPU time per completed request, in microseconds."""
        # The CPU counter spans warm-up, window and drain: divide by all responses.
        if self.proxy_cpu_s is None or not self.result.completed_total:
            return None
        return self.proxy_cpu_s / self.result.completed_total * 1e6

    @property
    def rate(self) -> float:
        """The offered rate, requests per second."""
        return self.result.target_rate

    @property
    def busy(self) -> float | None:
        """The proxy's CPU as a fraction of one core: CPU per request times achieved rate."""
        cpu = self.cpu_us_per_request
        return None if cpu is None else cpu * self.result.achieved_rate / 1e6


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """One offered rate of the latency-vs-load summary."""

    rate: float
    fraction: float | None  # of nginx's 1k peak in the same run
    # p99 added over direct per proxy measured at this rate (None: no direct run).
    added: Mapping[str, float | None]
    invalid: tuple[str, ...]  # targets whose run at this rate is not valid
    bluegreen_busy: float | None

    def within_budget(self, proxy: str) -> bool:
        """The proxy's p99 added is at most the budget, and both its run and direct's are valid."""
        valid = not {proxy, "direct"} & set(self.invalid)
        return added_within_budget(self.added.get(proxy), valid=valid)


def added_within_budget(added: float | None, *, valid: bool) -> bool:
    """A p99 added (None or NaN: not measured) at most the budget, in valid runs."""
    return valid and added is not None and not math.isnan(added) and added <= P99_ADDED_BUDGET_S


@dataclass(frozen=True, slots=True)
class RoundsAtRate:
    """Every round of one proxy at one rate: p99 added over direct's run in the same round.

    The tables keep the best round; this keeps the spread, so a budget met
    once in three rounds is not read as met.
    """

    target: str
    rate: float
    # Per round, in order: p99 added (None without a direct run) and whether
    # the proxy's run and direct's were both valid.
    added: tuple[float | None, ...]
    valid: tuple[bool, ...]

    @property
    def within(self) -> int:
        """Rounds whose p99 added is within the budget, in valid runs."""
        return sum(
            added_within_budget(added, valid=ok)
            for added, ok in zip(self.added, self.valid, strict=True)
        )


@dataclass(frozen=True, slots=True)
class IdleMemory:
    """A proxy's resident memory before and while holding idle client connections."""

    target: str
    processes: int
    rss_before: int
    rss_idle: int
    connections: int
    still_open: int
    # The largest worker process while idle connections are open: a child of the
    # root process (nginx's workers, bluegreen's with --workers), else the root.
    largest_worker: int = 0

    @property
    def per_connection(self) -> float:
        """Extra bytes per idle connection."""
        return (self.rss_idle - self.rss_before) / self.connections if self.connections else 0.0


@dataclass(slots=True)
class Report:
    """Everything one benchmark run found."""

    meta: dict[str, str] = field(default_factory=dict)
    throughput: list[Throughput] = field(default_factory=list)
    fixed_rate: list[FixedRate] = field(default_factory=list)
    fixed_rate_note: str = ""
    rounds: list[RoundsAtRate] = field(default_factory=list)
    cpu_stalls: list[CpuStalls] = field(default_factory=list)  # empty: not probed
    memory: list[IdleMemory] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- selection


def best_throughput(runs: Iterable[Throughput]) -> list[Throughput]:
    """Per (payload, target), the run with the most requests/s among error-free runs if any."""
    groups: dict[tuple[str, str], list[Throughput]] = {}
    for run in runs:
        groups.setdefault((run.payload, run.target), []).append(run)
    best = []
    for group in groups.values():
        clean = [r for r in group if not r.wrk.errors] or group
        best.append(max(clean, key=lambda r: r.wrk.rps))
    return sorted(best, key=_order)


def best_fixed_rate(runs: Iterable[FixedRate]) -> list[FixedRate]:
    """Per (payload, target, rate), the valid run with the lowest p99 (any run if none is valid).

    Ordered by payload, then rate, then target.
    """
    groups: dict[tuple[str, str, float], list[FixedRate]] = {}
    for run in runs:
        groups.setdefault((run.payload, run.target, run.rate), []).append(run)
    best = []
    for group in groups.values():
        valid = [r for r in group if not r.result.problems] or group
        best.append(min(valid, key=lambda r: _nan_last(r.result.latency.get("p99", math.nan))))
    return sorted(best, key=_fixed_order)


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _order(run: Throughput | FixedRate) -> tuple[int, int]:
    payload_rank = 0 if run.payload == "1k" else 1
    target_rank = TARGETS.index(run.target) if run.target in TARGETS else len(TARGETS)
    return payload_rank, target_rank


def _fixed_order(run: FixedRate) -> tuple[int, float, int]:
    payload_rank, target_rank = _order(run)
    return payload_rank, run.rate, target_rank


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    if math.isnan(value) or math.isnan(reference):
        return None
    return value / reference


def _reference(runs: Sequence[Throughput], payload: str) -> Throughput | None:
    for run in runs:
        if run.payload == payload and run.target == REFERENCE:
            return run
    return None


def p99_added(run: FixedRate, runs: Sequence[FixedRate]) -> float | None:
    """``run``'s p99 minus direct's at the same payload and rate; None for direct or without it."""
    if run.target == "direct":
        return None
    base = next(
        (
            r
            for r in runs
            if r.target == "direct" and r.payload == run.payload and r.rate == run.rate
        ),
        None,
    )
    if base is None:
        return None
    return run.result.latency.get("p99", math.nan) - base.result.latency.get("p99", math.nan)


# --------------------------------------------------------------------------- latency vs load


def offered_rates(runs: Iterable[FixedRate]) -> list[float]:
    """The distinct offered rates, ascending."""
    return sorted({run.rate for run in runs})


def load_points(runs: Sequence[FixedRate], peak: float | None) -> list[LoadPoint]:
    """One summary point per offered rate; ``peak`` is nginx's 1k requests/s in the run."""
    points = []
    for rate in offered_rates(runs):
        at_rate = [r for r in runs if r.rate == rate]
        by_target = {r.target: r for r in at_rate}
        bluegreen = by_target.get("bluegreen")
        points.append(
            LoadPoint(
                rate=rate,
                fraction=ratio(rate, peak),
                added={p: p99_added(by_target[p], at_rate) for p in PROXIES if p in by_target},
                invalid=tuple(r.target for r in at_rate if r.result.problems),
                bluegreen_busy=bluegreen.busy if bluegreen else None,
            )
        )
    return points


def highest_within_budget(points: Sequence[LoadPoint], proxy: str) -> LoadPoint | None:
    """The highest rate up to which ``proxy`` stayed within the budget at every rate measured.

    The first rate that misses the budget (or whose run is not valid) caps the
    figure: a pass at a higher rate after a miss is luck, not capacity.
    """
    best = None
    for point in sorted(points, key=lambda p: p.rate):
        if not point.within_budget(proxy):
            break
        best = point
    return best


def capacity_ratio(points: Sequence[LoadPoint]) -> float | None:
    """Latency-bound capacity: bluegreen's highest rate within budget over nginx's."""
    nginx = highest_within_budget(points, REFERENCE)
    bluegreen = highest_within_budget(points, "bluegreen")
    return ratio(bluegreen.rate if bluegreen else None, nginx.rate if nginx else None)


# --------------------------------------------------------------------------- formatting


def rounds_at_rates(rounds: Sequence[Sequence[FixedRate]]) -> list[RoundsAtRate]:
    """Per proxy and rate, every round's p99 added; ``rounds``: the runs of one round each.

    A round is one run of every target at one rate (interleaved), so a proxy's
    p99 is compared with direct's run of the same round, not the best one.
    """
    per_key: dict[tuple[str, float], list[tuple[float | None, bool]]] = {}
    for round_runs in rounds:
        direct = next((r for r in round_runs if r.target == "direct"), None)
        direct_valid = direct is not None and not direct.result.problems
        for run in round_runs:
            if run.target in PROXIES:
                ok = direct_valid and not run.result.problems
                per_key.setdefault((run.target, run.rate), []).append(
                    (p99_added(run, round_runs), ok)
                )
    result = [
        RoundsAtRate(
            target=target,
            rate=rate,
            added=tuple(_clean(a) for a, _ in entries),
            valid=tuple(ok for _, ok in entries),
        )
        for (target, rate), entries in per_key.items()
    ]
    return sorted(result, key=lambda r: (r.rate, PROXIES.index(r.target)))


def rounds_rows(rounds: Sequence[RoundsAtRate]) -> list[list[str]]:
    """Rows of the rounds table: one per rate, nginx and bluegreen side by side."""
    rows = []
    for rate in sorted({r.rate for r in rounds}):
        cells = [fmt_rate(rate)]
        for proxy in PROXIES:
            entry = next((r for r in rounds if r.rate == rate and r.target == proxy), None)
            if entry is None:
                cells += ["-", "-"]
                continue
            cells.append(f"{entry.within}/{len(entry.added)}")
            cells.append(
                ", ".join(
                    fmt_time(a) + ("" if ok else " (not valid)")
                    for a, ok in zip(entry.added, entry.valid, strict=True)
                )
            )
        rows.append(cells)
    return rows


ROUNDS_HEADERS = (
    "offered/s",
    "nginx rounds within",
    "nginx p99 added per round",
    "bluegreen rounds within",
    "bluegreen p99 added per round",
)


def fmt_rate(value: float) -> str:
    """Requests per second with thousands separators."""
    return f"{value:,.0f}"


def fmt_time(seconds: float | None) -> str:
    """A duration in µs, ms or s with three significant figures or so."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 0:
        return "-" + fmt_time(-seconds)
    # Compare after rounding so that 0.9999 ms reads "1.00 ms", not "1000 µs".
    if round(seconds * 1e6) < 1000:
        return f"{seconds * 1e6:.0f} µs"
    if round(seconds * 1e3, 2) < 1000:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_us(value: float | None) -> str:
    """Microseconds with one decimal."""
    return "-" if value is None else f"{value:.1f}"


def fmt_bytes(value: float) -> str:
    """A size in KiB or MiB."""
    if abs(value) < 1024 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value / 1024 / 1024:.1f} MiB"


def fmt_ratio(value: float | None) -> str:
    """A ratio like ``0.45x``."""
    return "-" if value is None else f"{value:.2f}x"


def fmt_percent(value: float | None) -> str:
    """A fraction as a percentage."""
    return "-" if value is None else f"{value * 100:.0f}%"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the first two left-aligned, the others right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


# --------------------------------------------------------------------------- the report


def throughput_rows(runs: Sequence[Throughput]) -> list[list[str]]:
    """Rows of the throughput table, with ratios to nginx of the same payload."""
    rows = []
    for run in runs:
        ref = _reference(runs, run.payload)
        is_proxy = run.target not in ("direct", REFERENCE)
        rps_ratio = ratio(run.wrk.rps, ref.wrk.rps) if ref and is_proxy else None
        # Per-core throughput: how many requests one core serves, relative to nginx.
        core_ratio = (
            ratio(ref.cpu_us_per_request, run.cpu_us_per_request) if ref and is_proxy else None
        )
        rows.append(
            [
                run.payload,
                run.target,
                fmt_rate(run.wrk.rps),
                fmt_time(run.wrk.p50_s),
                fmt_time(run.wrk.p99_s),
                fmt_us(run.cpu_us_per_request),
                fmt_percent(run.busy),
                fmt_us(run.upstream_us_per_request),
                ", ".join(describe_errors(run.wrk)) or "0",
                f"{run.other_cores:.2f}",
                fmt_ratio(rps_ratio),
                fmt_ratio(core_ratio),
            ]
        )
    return rows


THROUGHPUT_HEADERS = (
    "payload",
    "target",
    "req/s",
    "p50",
    "p99",
    "proxy CPU µs/req",
    "proxy core busy",
    "upstream µs/req",
    "errors",
    "other load",
    "req/s vs nginx",
    "per-core vs nginx",
)


def fixed_rate_rows(runs: Sequence[FixedRate]) -> list[list[str]]:
    """Rows of the fixed-rate table; "p99 added" is the p99 minus direct's at the same rate."""
    rows = []
    for run in runs:
        res = run.result
        added = p99_added(run, runs)
        rows.append(
            [
                run.payload,
                run.target,
                fmt_rate(res.target_rate),
                fmt_rate(res.achieved_rate),
                fmt_time(res.latency.get("p50")),
                fmt_time(res.latency.get("p90")),
                fmt_time(res.latency.get("p99")),
                fmt_time(res.latency.get("p99.9")),
                fmt_time(res.latency.get("max")),
                fmt_time(added),
                fmt_time(res.lag.get("p99")),
                fmt_us(run.cpu_us_per_request),
                f"{run.other_cores:.2f}",
                "yes" if not res.problems else "NO",
            ]
        )
    return rows


FIXED_RATE_HEADERS = (
    "payload",
    "target",
    "offered/s",
    "achieved/s",
    "p50",
    "p90",
    "p99",
    "p99.9",
    "max",
    "p99 added",
    "gen lag p99",
    "proxy CPU µs/req",
    "other load",
    "valid",
)


def load_rows(points: Sequence[LoadPoint]) -> list[list[str]]:
    """Rows of the latency-vs-load table."""
    rows = []
    for point in points:
        rows.append(
            [
                fmt_rate(point.rate),
                "-" if point.fraction is None else f"{point.fraction:.2f}",
                *(fmt_time(point.added.get(proxy)) for proxy in PROXIES),
                fmt_percent(point.bluegreen_busy),
                "NO: " + ", ".join(point.invalid) if point.invalid else "yes",
            ]
        )
    return rows


LOAD_HEADERS = (
    "offered/s",
    "of nginx's peak",
    "nginx p99 added",
    "bluegreen p99 added",
    "bluegreen core busy",
    "valid",
)


def _capacity_text(points: Sequence[LoadPoint], proxy: str) -> str:
    if not any(proxy in p.added for p in points):
        return f"{proxy} not measured"
    best = highest_within_budget(points, proxy)
    if best is None:
        return f"{proxy} never met it"
    fraction = "" if best.fraction is None else f" ({best.fraction:.2f} of nginx's peak)"
    top = " (the highest rate measured: at least this)" if best.rate == points[-1].rate else ""
    return f"{proxy} {fmt_rate(best.rate)}/s{fraction}{top}"


def capacity_line(points: Sequence[LoadPoint]) -> str:
    """Each proxy's highest rate within the p99-added budget, and bluegreen's over nginx's."""
    found = "; ".join(_capacity_text(points, proxy) for proxy in PROXIES)
    return (
        f"  latency-bound capacity (highest rate up to which every rate measured had "
        f"p99 added ≤ {fmt_time(P99_ADDED_BUDGET_S)} in valid runs): {found}; "
        f"bluegreen/nginx {fmt_ratio(capacity_ratio(points))}"
    )


def memory_rows(runs: Sequence[IdleMemory]) -> list[list[str]]:
    """Rows of the idle-connection memory table."""
    ref = next((m for m in runs if m.target == REFERENCE), None)
    rows = []
    for m in runs:
        rows.append(
            [
                m.target,
                str(m.processes),
                fmt_bytes(m.rss_before),
                fmt_bytes(m.rss_idle),
                fmt_bytes(m.per_connection),
                fmt_bytes(m.largest_worker) if m.largest_worker else "-",
                f"{m.still_open}/{m.connections}",
                fmt_ratio(ratio(m.rss_idle, ref.rss_idle) if ref and m is not ref else None),
            ]
        )
    return rows


def cpu_stall_rows(found: Sequence[CpuStalls]) -> list[list[str]]:
    """Rows of the CPU-stall table, one per CPU probed."""
    return [
        [
            "all" if c.cpu is None else str(c.cpu),
            str(c.gaps_over_1ms),
            fmt_time(c.lost_s),
            "-" if c.behind_tasks_s is None else fmt_time(c.behind_tasks_s),
            fmt_time(c.longest_s),
        ]
        for c in found
    ]


CPU_STALL_HEADERS = (
    "CPU",
    "gaps > 1 ms",
    "lost in gaps > 0.5 ms",
    "of it behind other tasks",
    "longest gap",
)


def cpu_stall_note(found: Sequence[CpuStalls]) -> str | None:
    """What a stall as long as the p99 budget means for the fixed-rate figures, else None."""
    longest = max((c.longest_s for c in found), default=0.0)
    if longest < P99_ADDED_BUDGET_S:
        return None
    return (
        f"the machine took a CPU away for up to {fmt_time(longest)} while every CPU was busy "
        f"(CPU stalls above; the p99 budget is {fmt_time(P99_ADDED_BUDGET_S)}). A stall "
        "like that lands in any proxy's tail, so these p99 added figures measure the machine "
        "as much as the proxy: read them next to nginx's rounds in this same run"
    )


MEMORY_HEADERS = (
    "target",
    "processes",
    "RSS before",
    "RSS with idle conns",
    "per idle conn",
    "largest worker",
    "still open",
    "RSS vs nginx",
)


def render(report: Report) -> str:
    """The whole report as text."""
    out = ["bluegreen proxy benchmark"]
    width = max((len(k) for k in report.meta), default=0)
    out += [f"  {k.ljust(width)}  {v}" for k, v in report.meta.items()]
    if report.throughput:
        out += ["", "Throughput: closed loop (wrk --latency), keep-alive"]
        out += render_table(THROUGHPUT_HEADERS, throughput_rows(report.throughput))
    if report.cpu_stalls:
        seconds = max(c.duration_s for c in report.cpu_stalls)
        out += [
            "",
            f"CPU stalls: every CPU busy at once for {seconds:.1f} s before the fixed-rate "
            "runs (a busy loop pinned to each CPU; a gap between two of its clock reads is "
            "time it did not run: another task had the CPU — the kernel's run delay says how "
            "long — or the host had the vCPU)",
        ]
        out += render_table(CPU_STALL_HEADERS, cpu_stall_rows(report.cpu_stalls))
    if report.fixed_rate or report.fixed_rate_note:
        out += ["", "Latency at a fixed rate: open loop (bench/pacer.c)"]
        if report.fixed_rate_note:
            out.append(report.fixed_rate_note)
        if report.fixed_rate:
            out += render_table(FIXED_RATE_HEADERS, fixed_rate_rows(report.fixed_rate))
            several = len(offered_rates(report.fixed_rate)) > 1
            for run in report.fixed_rate:
                who = f"{run.target} at {fmt_rate(run.rate)}/s" if several else run.target
                out += [f"  {who}: not valid: {p}" for p in run.result.problems]
            stall_note = cpu_stall_note(report.cpu_stalls)
            if stall_note:
                out.append(f"  CPU stalls: {stall_note}")
    if any(len(r.added) > 1 for r in report.rounds):
        budget = fmt_time(P99_ADDED_BUDGET_S)
        out += [
            "",
            f"Rounds within the budget: p99 added ≤ {budget} over direct's run in the same round",
        ]
        out += render_table(ROUNDS_HEADERS, rounds_rows(report.rounds))
    points = _latency_vs_load(report)
    if points:
        budget = fmt_time(P99_ADDED_BUDGET_S)
        out += ["", f"Latency vs load: p99 added over direct at each rate (budget {budget})"]
        out += render_table(LOAD_HEADERS, load_rows(points))
        out.append(capacity_line(points))
    if report.memory:
        conns = report.memory[0].connections
        out += ["", f"Memory: {conns} idle keep-alive client connections (VmRSS, summed)"]
        out += render_table(MEMORY_HEADERS, memory_rows(report.memory))
    if report.failures:
        out += ["", "FAILED:"] + [f"  - {f}" for f in report.failures]
    if report.notes:
        out += ["", "Notes:"] + [f"  - {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def _latency_vs_load(report: Report) -> list[LoadPoint]:
    """The summary points when more than one rate was measured, else none."""
    if len(offered_rates(report.fixed_rate)) < 2:
        return []
    peak = _reference(report.throughput, "1k")
    return load_points(report.fixed_rate, peak.wrk.rps if peak else None)


def _clean(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _wrk_json(w: WrkResult) -> dict[str, object]:
    return {
        "requests": w.requests,
        "elapsed_s": w.elapsed_s,
        "rps": w.rps,
        "p50_s": w.p50_s,
        "p75_s": w.p75_s,
        "p90_s": w.p90_s,
        "p99_s": w.p99_s,
        "errors": w.errors,
    }


def _load_json(points: Sequence[LoadPoint]) -> dict[str, object] | None:
    """The latency-vs-load summary as JSON-ready data; None with fewer than two rates."""
    if not points:
        return None
    highest = {p: highest_within_budget(points, p) for p in PROXIES}
    return {
        "p99_added_budget_s": P99_ADDED_BUDGET_S,
        "rates": [
            {
                "rate": point.rate,
                "fraction_of_nginx_peak": point.fraction,
                "p99_added_s": {k: _clean(v) for k, v in point.added.items()},
                "bluegreen_core_busy": _clean(point.bluegreen_busy),
                "invalid": list(point.invalid),
            }
            for point in points
        ],
        "highest_rate_within_budget": {
            proxy: point.rate if point else None for proxy, point in highest.items()
        },
        "capacity_ratio": capacity_ratio(points),
    }


def to_json(report: Report) -> dict[str, object]:
    """The report as JSON-ready data (NaN becomes null)."""
    throughput = []
    for run in report.throughput:
        ref = _reference(report.throughput, run.payload)
        is_proxy = run.target not in ("direct", REFERENCE)
        throughput.append(
            {
                "target": run.target,
                "payload": run.payload,
                **_wrk_json(run.wrk),
                "proxy_cpu_us_per_request": _clean(run.cpu_us_per_request),
                "proxy_core_busy": _clean(run.busy),
                "upstream_cpu_us_per_request": _clean(run.upstream_us_per_request),
                "other_load_cores": run.other_cores,
                "rps_vs_nginx": ratio(run.wrk.rps, ref.wrk.rps) if ref and is_proxy else None,
                "per_core_vs_nginx": (
                    ratio(ref.cpu_us_per_request, run.cpu_us_per_request)
                    if ref and is_proxy
                    else None
                ),
            }
        )
    fixed = []
    for f in report.fixed_rate:
        data = f.result.to_dict()
        data["latency"] = {k: _clean(v) for k, v in f.result.latency.items()}
        data["lag"] = {k: _clean(v) for k, v in f.result.lag.items()}
        fixed.append(
            {
                "target": f.target,
                "payload": f.payload,
                **data,
                "p99_added_s": _clean(p99_added(f, report.fixed_rate)),
                "proxy_cpu_us_per_request": _clean(f.cpu_us_per_request),
                "proxy_core_busy": _clean(f.busy),
                "other_load_cores": f.other_cores,
            }
        )
    memory = [
        {
            "target": m.target,
            "processes": m.processes,
            "rss_before_bytes": m.rss_before,
            "rss_idle_bytes": m.rss_idle,
            "connections": m.connections,
            "still_open": m.still_open,
            "bytes_per_idle_connection": m.per_connection,
            "largest_worker_rss_idle_bytes": m.largest_worker,
        }
        for m in report.memory
    ]
    return {
        "meta": dict(report.meta),
        "throughput": throughput,
        "fixed_rate": fixed,
        "fixed_rate_note": report.fixed_rate_note,
        "latency_vs_load": _load_json(_latency_vs_load(report)),
        "rounds": [
            {
                "target": r.target,
                "rate": r.rate,
                "p99_added_s": list(r.added),
                "valid": list(r.valid),
                "within_budget": r.within,
            }
            for r in report.rounds
        ],
        "cpu_stalls": [
            {
                "cpu": c.cpu,
                "duration_s": c.duration_s,
                "gaps_over_1ms": c.gaps_over_1ms,
                "lost_s": c.lost_s,
                "longest_s": c.longest_s,
                "behind_other_tasks_s": c.behind_tasks_s,
            }
            for c in report.cpu_stalls
        ]
        or None,
        "cpu_stall_note": cpu_stall_note(report.cpu_stalls) if report.fixed_rate else None,
        "memory": memory,
        "failures": list(report.failures),
        "notes": list(report.notes),
    }
