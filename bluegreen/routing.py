"""Routing: which colour serves a request. Pure: no I/O, clock or randomness.

Theory of operation
-------------------
Green's weight is kept in basis points (0..10000, i.e. 0.01 % resolution).
Every request is given a colour by the first rule that applies:

1. **Override.** A tester pins a request with the override header or cookie
   (``X-Bluegreen-Colour: green``): the seed's "canary for specific users".
2. **Sticky.** With a sticky key (a configured header or cookie, or the
   cookie the proxy sets itself), the colour is green iff
   ``bucket(salt, key) < green_bp`` where ``bucket`` is a keyed hash of the
   key mod 10000. The same key always lands in the same bucket, so a client
   keeps its colour while the weight stands still, and raising the weight
   only ever moves buckets from blue to green, never back (monotone ramp).
   The salt changes per rollout so the first 10 % are not always the same
   users.
3. **Weighted.** Without a key the split is deterministic: an accumulator
   gains ``green_bp`` per request and sends the request to green each time
   it crosses 10000 (a two-colour smooth weighted round-robin). Any window
   of 100 consecutive requests at 10 % therefore holds exactly 10 or 11
   green ones — exactly 10 % over time, not "on average".

Mirroring (the seed's shadow strategy at the traffic layer) copies a share
of *safe* requests (GET, HEAD, OPTIONS) served by blue to green and throws
green's answer away. Only safe methods: a mirrored POST or PUT would write
twice to the shared database.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Final

BASIS_POINTS: Final = 10_000
SAFE_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS"})


class Colour(StrEnum):
    """One of the two deployments."""

    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Colour:
        """The opposite colour."""
        return _GREEN if self is _BLUE else _BLUE


class Reason(StrEnum):
    """Why a request got its colour; shown in the access log."""

    OVERRIDE = "override"
    STICKY = "sticky"
    WEIGHTED = "weighted"
    RETRY = "retry"


# Members as plain module names and the answers of Router.choose as ready
# tuples: reading Colour.GREEN goes through the enum's descriptor (~250 ns on
# 3.11), too slow for once per request.
_BLUE: Final = Colour.BLUE
_GREEN: Final = Colour.GREEN
_OVERRIDE: Final = Reason.OVERRIDE
_BLUE_STICKY: Final = (Colour.BLUE, Reason.STICKY)
_GREEN_STICKY: Final = (Colour.GREEN, Reason.STICKY)
_BLUE_WEIGHTED: Final = (Colour.BLUE, Reason.WEIGHTED)
_GREEN_WEIGHTED: Final = (Colour.GREEN, Reason.WEIGHTED)


def percent_to_bp(percent: float) -> int:
    """Convert a weight in percent (0..100, 0.01 steps) to basis points.

    Raises ``ValueError`` naming the problem for values out of range or finer
    than 0.01 %.
    """
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise ValueError(f"expected a number between 0 and 100, got {percent!r}")
    if not 0 <= percent <= 100:
        raise ValueError(f"weight {percent:g} out of range; use 0..100 (percent)")
    bp = round(percent * 100)
    if abs(bp - percent * 100) > 1e-6:
        raise ValueError(f"weight {percent:g} is finer than the 0.01 % resolution")
    return bp


def bp_to_percent(bp: int) -> float:
    """Convert basis points back to a percentage (1050 -> 10.5)."""
    return bp / 100


def sticky_bucket(salt: bytes, key: bytes) -> int:
    """The bucket (0..9999) a sticky key falls into under ``salt``."""
    digest = hashlib.blake2b(key, digest_size=8, key=salt[:64]).digest()
    return int.from_bytes(digest, "big") % BASIS_POINTS


def parse_colour(value: bytes | str | None) -> Colour | None:
    """Parse an override value (``green``, ``Blue``); anything else is no override."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip().lower()
    if text == "green":
        return _GREEN
    if text == "blue":
        return _BLUE
    return None


class Router:
    """Turns (override, sticky key) into a colour under the current weights.

    The proxy owns one Router and pushes new weights into it with
    :meth:`set_weights`; :meth:`choose` is called once per request.
    """

    __slots__ = ("_accumulator", "_mirror_accumulator", "green_bp", "mirror_bp", "salt")

    def __init__(self, green_bp: int = 0, salt: bytes = b"", mirror_bp: int = 0) -> None:
        self.green_bp = 0
        self.mirror_bp = 0
        self.salt = salt
        self._accumulator = 0
        self._mirror_accumulator = 0
        self.set_weights(green_bp, salt=salt, mirror_bp=mirror_bp)

    def set_weights(
        self, green_bp: int, *, salt: bytes | None = None, mirror_bp: int | None = None
    ) -> None:
        """Apply new weights (basis points); ``None`` keeps the current value.

        Validates everything before changing anything.
        """
        if not 0 <= green_bp <= BASIS_POINTS:
            raise ValueError(f"green weight {green_bp} bp out of range 0..{BASIS_POINTS}")
        if mirror_bp is not None and not 0 <= mirror_bp <= BASIS_POINTS:
            raise ValueError(f"mirror share {mirror_bp} bp out of range 0..{BASIS_POINTS}")
        self.green_bp = green_bp
        if salt is not None:
            self.salt = salt
        if mirror_bp is not None:
            self.mirror_bp = mirror_bp

    def weight_bp(self, colour: Colour) -> int:
        """The traffic share of ``colour`` in basis points (blue gets what green does not)."""
        return self.green_bp if colour is _GREEN else BASIS_POINTS - self.green_bp

    def choose(
        self, sticky_key: bytes | None = None, override: Colour | None = None
    ) -> tuple[Colour, Reason]:
        """Pick the colour for one request and say why."""
        if override is not None:
            return override, _OVERRIDE
        if sticky_key is not None:
            if sticky_bucket(self.salt, sticky_key) < self.green_bp:
                return _GREEN_STICKY
            return _BLUE_STICKY
        accumulator = self._accumulator + self.green_bp
        if accumulator >= BASIS_POINTS:
            self._accumulator = accumulator - BASIS_POINTS
            return _GREEN_WEIGHTED
        self._accumulator = accumulator
        return _BLUE_WEIGHTED

    def should_mirror(self, method: bytes, colour: Colour) -> bool:
        """Whether to send a copy of this request to green (answer discarded)."""
        if self.mirror_bp == 0 or colour is not _BLUE or method not in SAFE_METHODS:
            return False
        self._mirror_accumulator += self.mirror_bp
        if self._mirror_accumulator >= BASIS_POINTS:
            self._mirror_accumulator -= BASIS_POINTS
            return True
        return False
