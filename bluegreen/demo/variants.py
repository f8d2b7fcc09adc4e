"""What each ``bluegreen demo`` run expects, and which failed requests it may cost. Pure.

No I/O, no clock: times are seconds on the load generator's clock
(:class:`~bluegreen.demo.report.RequestRecord`), passed in.

=================  ================  =============================================
run                expected outcome  failed requests allowed
=================  ================  =============================================
``bluegreen demo``  ``promoted``     none
``--break green``  ``rolled_back``   only non-idempotent requests (POST, PATCH)
                                     answered 5xx by green between the moment it
                                     started failing and the moment its weight
                                     was 0 % on every replica (the detection
                                     window). The demo's proxy sends an
                                     idempotent request green answered 500 once
                                     more to blue (``retries.statuses``); a POST
                                     the app answered may have done its work, so
                                     its 500 is the client's answer.
``--kill green``   ``rolled_back``   no idempotent request; a non-idempotent one
                                     (POST, PATCH) only if it was in flight on
                                     green when it died (sent before the kill, or
                                     within ``KILL_RACE`` of it, on a connection
                                     the kill was closing) and got no answer or
                                     the proxy's 502: it may have been committed,
                                     so the proxy must not replay it.
=================  ================  =============================================

Everything else fails the run: a failure on blue, a request without an answer
in the ``--break`` run, any failure after the fallback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from bluegreen.demo.report import RequestRecord

KILL_RACE: Final = 0.05  # seconds: a request sent this soon after the kill may hit a dead socket
BAD_GATEWAY: Final = 502


class Action(StrEnum):
    """What a failure variant does to a colour."""

    BREAK = "break"  # the app answers 500 to a share of requests (failure injection)
    KILL = "kill"  # SIGKILL to the app's process group


@dataclass(frozen=True, slots=True)
class Variant:
    """A demo run: plain (``action`` None) or a failure done to ``colour`` at ``at_percent``."""

    action: Action | None = None
    colour: str = "green"
    at_percent: float = 50.0
    break_ratio: float = 0.5

    @property
    def name(self) -> str | None:
        """``break green`` / ``kill green``; None for the plain run."""
        return None if self.action is None else f"{self.action.value} {self.colour}"

    @property
    def expected_outcome(self) -> str:
        """``promoted`` for the plain run; a failure variant must end ``rolled_back``."""
        return "promoted" if self.action is None else "rolled_back"

    @property
    def rule(self) -> str:
        """The failures this run may cost, in one sentence."""
        match self.action:
            case None:
                return "no request may fail"
            case Action.BREAK:
                return (
                    f"only non-idempotent requests answered 5xx by {self.colour} between the "
                    f"moment it started failing and the moment its weight was 0 % may fail"
                )
            case Action.KILL:
                return (
                    "no idempotent request may fail; a non-idempotent one only if it was in "
                    f"flight on {self.colour} when it was killed"
                )


@dataclass(frozen=True, slots=True)
class FailureWindow:
    """When the variant struck and when its colour was at 0 % (load clock; None: never)."""

    struck_at: float | None = None
    zero_at: float | None = None


def allowed(record: RequestRecord, variant: Variant, window: FailureWindow) -> bool:
    """Whether the failed ``record`` is one the variant may cost (see the module table)."""
    if not record.failed or variant.action is None or window.struck_at is None:
        return False
    end = record.start + record.latency
    match variant.action:
        case Action.BREAK:
            return (
                not record.idempotent
                and record.colour == variant.colour
                and record.status is not None
                and end >= window.struck_at
                and (window.zero_at is None or record.start <= window.zero_at)
            )
        case Action.KILL:
            return (
                not record.idempotent
                and (record.status is None or record.status == BAD_GATEWAY)
                and record.start <= window.struck_at + KILL_RACE
                and end >= window.struck_at
            )


def allowed_failures(
    records: Iterable[RequestRecord], variant: Variant, window: FailureWindow
) -> int:
    """How many of the failed ``records`` the variant may cost."""
    return sum(1 for r in records if r.failed and allowed(r, variant, window))
