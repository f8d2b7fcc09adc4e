"""Cluster-wide traffic numbers per colour, for health analysis and drains. Pure.

No I/O, clock or randomness. Every proxy replica publishes its cumulative
per-colour counters (and the requests in flight now) in the ``traffic`` field
of its heartbeat (:func:`traffic_payload`); the leading controller reads them
back with :func:`traffic_from_extra`, for its own replica straight from the
proxy.

Mapping the proxy's counters to the analysis' :class:`Counters`
-----------------------------------------------------------------
The proxy counts a request under the colour that *finished* it. A request
whose connection to a colour failed before anything was sent is retried once
elsewhere (the other colour, or another server): it is counted as a
``retry`` of the colour that failed and finishes, usually successfully,
under another one. For analysis that request was sent to the failing colour
and failed there, so::

    requests       = finished requests + retries
    failures       = 5xx answers (the proxy's own 502/503/504 included) + retries

Connect and read timeouts end as 504s, so they are already among the 5xx and
are not added again. (A retry on another server of the same colour is then
counted twice in ``requests`` — it was sent twice — and once as a failure.)

Windows: :func:`cluster_window` diffs two samples replica by replica
(``window`` treats a counter that went down as a restart) and sums them. A
replica seen for the first time only gives the baseline for the next window.

Drains: :func:`drain_status` says whether a colour has nothing in flight on
any live replica, counting only heartbeats taken after the replica applied
the state version that took the colour's traffic away.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bluegreen.health.analysis import Counters, Histogram, WindowStats, combine, window
from bluegreen.metrics import DURATION_BUCKETS, ColourSnapshot, StatsSnapshot
from bluegreen.routing import Colour

TRAFFIC_KEY: Final = "traffic"
LATENCY_BOUNDS: Final = (*DURATION_BUCKETS, math.inf)

# Rollout phases during which replicas heartbeat fast (weights confirmed, drains seen,
# analysis fed): everything but a finished rollout whose old colour is done with.
_BUSY_PHASES: Final = frozenset({"preflight", "migrating", "smoke", "ramp", "bake", "rolling_back"})
_BUSY_CONTRACT: Final = frozenset({"draining", "running"})


@dataclass(frozen=True, slots=True)
class ColourTraffic:
    """One colour's cumulative numbers on one replica, as published in its heartbeat."""

    requests: int = 0
    errors_5xx: int = 0
    connect_errors: int = 0
    timeouts: int = 0
    retries: int = 0
    in_flight: int = 0
    latency: tuple[int, ...] = ()  # per DURATION_BUCKETS slot, last = +Inf; () unknown

    @classmethod
    def of(cls, snapshot: ColourSnapshot) -> ColourTraffic:
        """From the proxy's own snapshot."""
        return cls(
            requests=snapshot.requests,
            errors_5xx=snapshot.errors_5xx,
            connect_errors=snapshot.connect_errors,
            timeouts=snapshot.timeouts,
            retries=snapshot.retries,
            in_flight=snapshot.in_flight,
            latency=tuple(snapshot.duration_counts),
        )

    def counters(self) -> Counters:
        """The analysis' view: requests sent to this colour and how many failed here."""
        latency = None
        if len(self.latency) == len(LATENCY_BOUNDS):
            latency = Histogram(LATENCY_BOUNDS, self.latency)
        return Counters(
            requests=self.requests + self.retries,
            errors_5xx=self.errors_5xx,
            connect_errors=self.retries,
            timeouts=0,
            latency=latency,
        )

    def to_json(self) -> dict[str, Any]:
        """The heartbeat form."""
        return {
            "requests": self.requests,
            "errors_5xx": self.errors_5xx,
            "connect_errors": self.connect_errors,
            "timeouts": self.timeouts,
            "retries": self.retries,
            "in_flight": self.in_flight,
            "latency": list(self.latency),
        }


Traffic = Mapping[Colour, ColourTraffic]


def traffic_of(snapshot: StatsSnapshot) -> dict[Colour, ColourTraffic]:
    """Both colours of a proxy snapshot."""
    return {c: ColourTraffic.of(snapshot.colour(c)) for c in Colour}


def traffic_payload(snapshot: StatsSnapshot) -> dict[str, Any]:
    """What a replica puts under ``traffic`` in its heartbeat's ``extra``."""
    return {c.value: t.to_json() for c, t in traffic_of(snapshot).items()}


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _colour_from_json(data: object) -> ColourTraffic | None:
    if not isinstance(data, Mapping):
        return None
    fields = {}
    for name in ("requests", "errors_5xx", "connect_errors", "timeouts", "retries", "in_flight"):
        value = _count(data.get(name))
        if value is None:
            return None
        fields[name] = value
    raw = data.get("latency", [])
    latency: tuple[int, ...] = ()
    if isinstance(raw, list) and len(raw) == len(LATENCY_BOUNDS):
        counts = [_count(v) for v in raw]
        if all(c is not None for c in counts):
            latency = tuple(c for c in counts if c is not None)
    return ColourTraffic(latency=latency, **fields)


def traffic_from_extra(extra: Mapping[str, Any]) -> dict[Colour, ColourTraffic] | None:
    """A heartbeat's traffic numbers, or None when absent or malformed (an older replica)."""
    data = extra.get(TRAFFIC_KEY)
    if not isinstance(data, Mapping):
        return None
    result = {}
    for colour in Colour:
        parsed = _colour_from_json(data.get(colour.value))
        if parsed is None:
            return None
        result[colour] = parsed
    return result


# --------------------------------------------------------------------------- windows


def cluster_window(
    before: Mapping[str, Traffic], after: Mapping[str, Traffic]
) -> dict[Colour, WindowStats]:
    """What each colour served between two samples, summed over replicas.

    Keys are replica ids. Replicas only in ``after`` are new (their counters
    include traffic from before the window) and are left out; replicas only in
    ``before`` are gone.
    """
    result: dict[Colour, WindowStats] = {}
    for colour in Colour:
        windows = [
            window(before[rid][colour].counters(), traffic[colour].counters())
            for rid, traffic in after.items()
            if rid in before
        ]
        result[colour] = combine(windows)
    return result


# --------------------------------------------------------------------------- drains


@dataclass(frozen=True, slots=True)
class ReplicaTraffic:
    """What the controller knows about one live replica for a drain."""

    id: str
    applied_version: int
    traffic: Traffic | None  # None: the replica does not publish its numbers


@dataclass(frozen=True, slots=True)
class DrainStatus:
    """Whether a colour is drained everywhere, and who it waits for."""

    drained: bool
    waiting: tuple[str, ...]  # "replica: 3 in flight", "replica: has not applied version 12"


def drain_status(replicas: Sequence[ReplicaTraffic], colour: Colour, version: int) -> DrainStatus:
    """``colour`` is drained when every live replica reports nothing in flight to it.

    Only reports taken once the replica ran ``version`` (the state that took
    the colour's traffic away) count. Without any live replica nothing is
    known, so nothing is drained.
    """
    waiting: list[str] = []
    for r in replicas:
        if r.applied_version < version:
            waiting.append(f"{r.id}: has not applied version {version} yet")
        elif r.traffic is None:
            waiting.append(f"{r.id}: does not report requests in flight (upgrade bluegreen)")
        elif r.traffic[colour].in_flight:
            waiting.append(f"{r.id}: {r.traffic[colour].in_flight} in flight")
    if not replicas:
        waiting.append("no live replica reports")
    return DrainStatus(not waiting, tuple(waiting))


def wants_fast_heartbeats(rollout: Mapping[str, Any] | None) -> bool:
    """Whether a stored rollout record is in a phase where replicas should heartbeat fast."""
    if not isinstance(rollout, Mapping):
        return False
    phase = rollout.get("phase")
    if phase in _BUSY_PHASES:
        return True
    return phase == "promoted" and rollout.get("contract") in _BUSY_CONTRACT
