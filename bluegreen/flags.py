"""Feature flags evaluated by the proxy, so applications need no SDK. Pure.

The seed's strategy 3 ("turn the new column on for 10 % of users, or for
admin@example.com"), served at the traffic layer: for each request the proxy
works out which flags are on and forwards them upstream in one header
(``X-Bluegreen-Flags: new_status_column,fast_checkout``).

A flag is on for a request when, in this order:

1. it is limited to a colour and the request goes to the other one -> off;
2. the request's key is in the flag's allow-list -> on;
3. ``bucket(flag.salt, key) < percent_bp`` -> on (the routing hash with the
   flag's own salt, so raising the percentage only ever turns a flag on for
   more users, never off for someone who had it);
4. a request without a key gets a flag only at 100 %: a per-request coin flip
   would show one user both behaviours.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Protocol

from bluegreen.routing import BASIS_POINTS, Colour, sticky_bucket

FLAGS_HEADER: Final = "X-Bluegreen-Flags"


class FlagLike(Protocol):
    """What evaluation needs from a flag (the state document's Flag has it)."""

    @property
    def name(self) -> str: ...
    @property
    def percent_bp(self) -> int: ...
    @property
    def allow(self) -> tuple[str, ...]: ...
    @property
    def colour(self) -> Colour | None: ...
    @property
    def effective_salt(self) -> str: ...


def is_enabled(flag: FlagLike, key: bytes | None, colour: Colour | None) -> bool:
    """Whether ``flag`` is on for a request with this sticky key and colour."""
    if flag.colour is not None and colour is not None and flag.colour is not colour:
        return False
    if key is None:
        return flag.percent_bp >= BASIS_POINTS
    if flag.allow and key.decode("utf-8", "replace") in flag.allow:
        return True
    return sticky_bucket(flag.effective_salt.encode(), key) < flag.percent_bp


def enabled_flags(flags: Iterable[FlagLike], key: bytes | None, colour: Colour | None) -> list[str]:
    """Names of the flags on for this request, sorted."""
    return sorted(f.name for f in flags if is_enabled(f, key, colour))


class FlagHeaderCache:
    """Builds the ``X-Bluegreen-Flags`` header line for the proxy's hot path.

    Holds the current flag set (replaced wholesale when the state changes) and
    returns ready-to-send header bytes, or ``b""`` when no flag is on.
    """

    __slots__ = ("_flags",)

    def __init__(self, flags: Iterable[FlagLike] = ()) -> None:
        self._flags: tuple[FlagLike, ...] = tuple(flags)

    def replace(self, flags: Iterable[FlagLike]) -> None:
        """Swap in a new flag set."""
        self._flags = tuple(flags)

    def header_line(self, key: bytes | None, colour: Colour | None) -> bytes:
        """``b"X-Bluegreen-Flags: a,b\\r\\n"`` or ``b""``."""
        if not self._flags:
            return b""
        names = enabled_flags(self._flags, key, colour)
        if not names:
            return b""
        return f"{FLAGS_HEADER}: {','.join(names)}\r\n".encode()
