"""Feature-flag evaluation: allow-lists, colours, monotone percentages, header bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bluegreen.flags import FlagHeaderCache, enabled_flags, is_enabled
from bluegreen.routing import Colour
from bluegreen.state.model import Flag

users = [f"user-{i}".encode() for i in range(5000)]


def test_allow_listed_user_gets_the_flag_at_zero_percent() -> None:
    flag = Flag(name="new_status", percent_bp=0, allow=("admin@example.com",))
    assert is_enabled(flag, b"admin@example.com", Colour.GREEN)
    assert not is_enabled(flag, b"someone@example.com", Colour.GREEN)


def test_colour_limited_flag_is_off_on_the_other_colour_even_when_allow_listed() -> None:
    flag = Flag(name="new_status", percent_bp=10_000, allow=("admin",), colour=Colour.GREEN)
    assert is_enabled(flag, b"admin", Colour.GREEN)
    assert not is_enabled(flag, b"admin", Colour.BLUE)
    assert not is_enabled(flag, b"anyone", Colour.BLUE)


def test_percentage_share_over_many_users() -> None:
    flag = Flag(name="f", percent_bp=1000)
    on = sum(is_enabled(flag, u, None) for u in users)
    assert 400 <= on <= 600


@given(low=st.integers(0, 10_000), high=st.integers(0, 10_000))
def test_raising_the_percentage_never_turns_the_flag_off_for_anyone(low: int, high: int) -> None:
    low, high = sorted((low, high))
    before = {u for u in users[:300] if is_enabled(Flag(name="f", percent_bp=low), u, None)}
    after = {u for u in users[:300] if is_enabled(Flag(name="f", percent_bp=high), u, None)}
    assert before <= after


def test_each_flag_hashes_with_its_own_salt() -> None:
    a = {u for u in users if is_enabled(Flag(name="a", percent_bp=1000), u, None)}
    b = {u for u in users if is_enabled(Flag(name="b", percent_bp=1000), u, None)}
    assert a != b


def test_requests_without_a_key_get_only_full_flags() -> None:
    assert is_enabled(Flag(name="f", percent_bp=10_000), None, Colour.BLUE)
    assert not is_enabled(Flag(name="f", percent_bp=9_999), None, Colour.BLUE)


def test_enabled_flags_sorted() -> None:
    flags = [Flag(name="zeta", percent_bp=10_000), Flag(name="alpha", percent_bp=10_000)]
    assert enabled_flags(flags, b"k", Colour.BLUE) == ["alpha", "zeta"]


def test_header_line_bytes() -> None:
    cache = FlagHeaderCache()
    assert cache.header_line(b"k", Colour.BLUE) == b""
    cache.replace([Flag(name="b", percent_bp=10_000), Flag(name="a", percent_bp=10_000)])
    assert cache.header_line(b"k", Colour.BLUE) == b"X-Bluegreen-Flags: a,b\r\n"
    cache.replace([Flag(name="off", percent_bp=0)])
    assert cache.header_line(b"k", Colour.BLUE) == b""
