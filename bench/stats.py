"""Pure statistics for the fixed-rate runs (bench/pacer.c): quantiles and the run summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

# Quantiles reported for the fixed-rate runs, as labels of the JSON output.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
)

# A fixed-rate run counts only if the generator released requests on time and
# got answers for nearly all of them; otherwise its latencies describe the
# generator, not the target.
MIN_ACHIEVED_FRACTION = 0.97
MAX_LAG_P99_S = 0.002


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of already sorted values (``q`` in 0..1); NaN when empty."""
    if not sorted_values:
        return math.nan
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside 0..1")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(values: Sequence[float]) -> dict[str, float]:
    """The :data:`QUANTILES` of ``values`` (seconds in, seconds out)."""
    ordered = sorted(values)
    return {label: quantile(ordered, q) for label, q in QUANTILES}


@dataclass(frozen=True, slots=True)
class RateResult:
    """What the fixed-rate generator measured in its measurement window.

    ``latency`` runs from the moment the generator released a request (sent
    it, or queued it because every connection was busy) to the end of its
    response, so waiting for a free connection — the server being slow —
    counts. ``lag`` is how late the generator released requests compared with
    the schedule: its own timer granularity and CPU, not the target's.
    """

    target_rate: float
    window_s: float
    released: int
    completed: int
    errors: int
    unanswered: int
    latency: Mapping[str, float] = field(default_factory=dict)
    lag: Mapping[str, float] = field(default_factory=dict)
    max_backlog: int = 0
    generator_cpu_s: float = 0.0
    reconnects: int = 0
    completed_total: int = 0  # responses over warm-up and window
    # Responses that arrived inside the window: the throughput actually delivered
    # (``completed`` also counts window requests answered during the drain).
    completed_in_window: int = 0

    @property
    def achieved_rate(self) -> float:
        """Responses per second that arrived during the window."""
        return self.completed_in_window / self.window_s if self.window_s > 0 else 0.0

    @property
    def problems(self) -> list[str]:
        """Why the run does not count (empty when it does)."""
        found = []
        if self.achieved_rate < MIN_ACHIEVED_FRACTION * self.target_rate:
            found.append(
                f"achieved {self.achieved_rate:,.0f}/s of {self.target_rate:,.0f}/s: "
                "the target (or the generator) could not keep up"
            )
        lag_p99 = self.lag.get("p99", math.nan)
        if not lag_p99 <= MAX_LAG_P99_S:
            found.append(
                f"generator released requests late (lag p99 {lag_p99 * 1e3:.2f} ms): the load "
                "CPU was busy (see other load) or the rate is too high for one generator thread"
            )
        if self.errors or self.unanswered:
            found.append(f"{self.errors} errors, {self.unanswered} unanswered")
        return found

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {**asdict(self), "achieved_rate": self.achieved_rate, "problems": self.problems}

    @classmethod
    def from_counters(
        cls,
        counters: Mapping[str, object],
        *,
        latency: Mapping[str, float],
        lag: Mapping[str, float],
    ) -> RateResult:
        """Build from pacer's JSON counters and the quantiles of its samples."""

        def num(key: str) -> float:
            value = counters.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"pacer output: {key!r} is not a number: {value!r}")
            return float(value)

        return cls(
            target_rate=num("target_rate"),
            window_s=num("window_s"),
            released=int(num("released")),
            completed=int(num("completed")),
            errors=int(num("errors")),
            unanswered=int(num("unanswered")),
            latency=dict(latency),
            lag=dict(lag),
            max_backlog=int(num("max_backlog")),
            generator_cpu_s=num("generator_cpu_s"),
            reconnects=int(num("reconnects")),
            completed_total=int(num("completed_total")),
            completed_in_window=int(num("completed_in_window")),
        )
