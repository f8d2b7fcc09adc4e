"""Active-probe health per upstream server. Pure: no I/O, clock or randomness.

Theory of operation
-------------------
A prober (the I/O shell) checks every server of both colours at an interval
and feeds each result in with :meth:`ServerProbe.observe` (or
:meth:`ColourProbes.observe`), passing the time it got the answer. Each
server's health only flips after a run of agreeing results, as in Envoy and
Kubernetes:

* ``unhealthy_threshold`` consecutive failures turn a healthy server unhealthy;
* ``healthy_threshold`` consecutive successes turn an unhealthy server healthy;
* any result of the other kind resets the run.

A server starts in ``initial`` (unhealthy by default: nothing is sent to a
server nobody has checked). With ``first_success_marks_healthy`` (Envoy's
startup rule) the very first success of a never-checked server is enough, so
a fresh deployment does not wait ``healthy_threshold`` intervals.

Every flip is returned as a :class:`ProbeChange` value, so the shell can log
it, update the ``bluegreen_upstream_up`` gauge and tell the proxy's pool. The
per-colour :class:`ProbeSummary` is what health analysis compares.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from bluegreen.routing import Colour


class ProbeHealth(StrEnum):
    """A server's health as active probes see it."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class ProbeThresholds:
    """How many agreeing results flip a server's health (Envoy/Kubernetes semantics)."""

    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    initial: ProbeHealth = ProbeHealth.UNHEALTHY
    first_success_marks_healthy: bool = True

    def __post_init__(self) -> None:
        for name in ("healthy_threshold", "unhealthy_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class ProbeChange:
    """A server's health flipped; ``detail`` is the result that flipped it."""

    server: str
    before: ProbeHealth
    after: ProbeHealth
    at: float
    detail: str


@dataclass(frozen=True, slots=True)
class ServerProbe:
    """One server's probe state: its health and the current run of results."""

    server: str
    thresholds: ProbeThresholds
    health: ProbeHealth
    successes: int = 0  # consecutive, reset by a failure
    failures: int = 0  # consecutive, reset by a success
    checked: bool = False
    changed_at: float | None = None
    detail: str = ""  # the last result's detail ("200 in 3 ms", "connect refused")

    @classmethod
    def new(cls, server: str, thresholds: ProbeThresholds | None = None) -> ServerProbe:
        """A never-checked server in the configured initial state."""
        t = thresholds if thresholds is not None else ProbeThresholds()
        return cls(server=server, thresholds=t, health=t.initial)

    @property
    def healthy(self) -> bool:
        """True while the server counts as healthy."""
        return self.health is ProbeHealth.HEALTHY

    def observe(
        self, ok: bool, *, at: float, detail: str = ""
    ) -> tuple[ServerProbe, ProbeChange | None]:
        """Record one probe result; return the new state and the flip, if any."""
        t = self.thresholds
        if ok:
            successes, failures = self.successes + 1, 0
            startup = not self.checked and t.first_success_marks_healthy
            flip = not self.healthy and (startup or successes >= t.healthy_threshold)
            after = ProbeHealth.HEALTHY if flip else self.health
        else:
            successes, failures = 0, self.failures + 1
            flip = self.healthy and failures >= t.unhealthy_threshold
            after = ProbeHealth.UNHEALTHY if flip else self.health
        new = replace(
            self,
            health=after,
            successes=successes,
            failures=failures,
            checked=True,
            changed_at=at if flip else self.changed_at,
            detail=detail,
        )
        if not flip:
            return new, None
        return new, ProbeChange(self.server, self.health, after, at, detail)


@dataclass(frozen=True, slots=True)
class ProbeSummary:
    """How many of a colour's servers are configured and how many are unhealthy."""

    servers: int
    unhealthy: int

    def __post_init__(self) -> None:
        if self.servers < 0 or not 0 <= self.unhealthy <= self.servers:
            raise ValueError(
                f"probe summary needs 0 <= unhealthy <= servers, got "
                f"{self.unhealthy} unhealthy of {self.servers}"
            )

    @property
    def unhealthy_fraction(self) -> float:
        """Share of unhealthy servers (0.0 with no servers)."""
        return self.unhealthy / self.servers if self.servers else 0.0

    @property
    def all_unhealthy(self) -> bool:
        """True when the colour has servers and none of them is healthy."""
        return self.servers > 0 and self.unhealthy == self.servers


@dataclass(frozen=True, slots=True)
class ColourProbes:
    """The probe state of every server of one colour, in configuration order."""

    colour: Colour
    servers: tuple[ServerProbe, ...]

    @classmethod
    def new(
        cls, colour: Colour, servers: Iterable[str], thresholds: ProbeThresholds | None = None
    ) -> ColourProbes:
        """Never-checked probes for ``servers`` (``host:port`` strings)."""
        probes = tuple(ServerProbe.new(s, thresholds) for s in servers)
        names = [p.server for p in probes]
        if len(set(names)) != len(names):
            raise ValueError(f"{colour} servers listed twice: {names}")
        return cls(colour, probes)

    def get(self, server: str) -> ServerProbe:
        """The probe state of ``server``; ``KeyError`` naming the colour if unknown."""
        for probe in self.servers:
            if probe.server == server:
                return probe
        raise KeyError(f"{self.colour} has no server {server!r}")

    def observe(
        self, server: str, ok: bool, *, at: float, detail: str = ""
    ) -> tuple[ColourProbes, ProbeChange | None]:
        """Record one result for ``server``; return the new set and the flip, if any."""
        new_probe, change = self.get(server).observe(ok, at=at, detail=detail)
        servers = tuple(new_probe if p.server == server else p for p in self.servers)
        return replace(self, servers=servers), change

    def summary(self) -> ProbeSummary:
        """Counts for health analysis."""
        unhealthy = sum(1 for p in self.servers if not p.healthy)
        return ProbeSummary(servers=len(self.servers), unhealthy=unhealthy)
