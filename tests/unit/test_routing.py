"""The routing core: weights, sticky monotone ramp, deterministic split, overrides, mirroring."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluegreen.routing import (
    BASIS_POINTS,
    Colour,
    Reason,
    Router,
    bp_to_percent,
    parse_colour,
    percent_to_bp,
    sticky_bucket,
)

keys = st.binary(min_size=1, max_size=40)
weights_bp = st.integers(min_value=0, max_value=BASIS_POINTS)


@pytest.mark.parametrize(
    ("percent", "bp"),
    [(0, 0), (10, 1000), (10.5, 1050), (0.01, 1), (99.99, 9999), (100, 10000), (33.33, 3333)],
)
def test_percent_to_bp_accepts_0_01_steps(percent: float, bp: int) -> None:
    assert percent_to_bp(percent) == bp
    assert bp_to_percent(bp) == pytest.approx(percent)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "out of range"),
        (100.01, "out of range"),
        (10.005, "finer than the 0.01 % resolution"),
        (True, "expected a number"),
        ("10", "expected a number"),
    ],
    ids=["negative", "above-100", "too-fine", "bool", "string"],
)
def test_percent_to_bp_rejects_bad_weights(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        percent_to_bp(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "colour"),
    [
        (b"green", Colour.GREEN),
        (b"GREEN", Colour.GREEN),
        (" Blue ", Colour.BLUE),
        (b"purple", None),
        (b"", None),
        (None, None),
    ],
)
def test_parse_colour(raw: bytes | str | None, colour: Colour | None) -> None:
    assert parse_colour(raw) is colour


def test_colour_other() -> None:
    assert Colour.BLUE.other is Colour.GREEN
    assert Colour.GREEN.other is Colour.BLUE


@given(key=keys, salt=st.binary(max_size=80))
def test_sticky_bucket_is_stable_and_in_range(key: bytes, salt: bytes) -> None:
    bucket = sticky_bucket(salt, key)
    assert 0 <= bucket < BASIS_POINTS
    assert sticky_bucket(salt, key) == bucket


@given(key=keys, weight=weights_bp)
def test_sticky_client_keeps_its_colour(key: bytes, weight: int) -> None:
    router = Router(weight, salt=b"rollout-1")
    first, reason = router.choose(sticky_key=key)
    assert reason is Reason.STICKY
    assert all(router.choose(sticky_key=key)[0] is first for _ in range(5))


@given(key_list=st.lists(keys, min_size=1, max_size=30), ramp=st.lists(weights_bp, max_size=12))
def test_raising_the_weight_never_moves_a_client_back_to_blue(
    key_list: list[bytes], ramp: list[int]
) -> None:
    router = Router(0, salt=b"salt")
    on_green: set[bytes] = set()
    for weight in sorted(ramp):
        router.set_weights(weight)
        now_green = {k for k in key_list if router.choose(sticky_key=k)[0] is Colour.GREEN}
        assert on_green <= now_green
        on_green = now_green


def test_sticky_share_tracks_the_weight_over_many_keys() -> None:
    router = Router(1000, salt=b"s")
    green = sum(
        router.choose(sticky_key=f"user-{i}".encode())[0] is Colour.GREEN for i in range(20_000)
    )
    assert 1800 <= green <= 2200  # 10 % of 20 000, within a few standard deviations


def test_salt_changes_which_clients_go_first() -> None:
    users = [f"user-{i}".encode() for i in range(2000)]
    first = {
        u for u in users if Router(1000, salt=b"rollout-1").choose(sticky_key=u)[0] is Colour.GREEN
    }
    second = {
        u for u in users if Router(1000, salt=b"rollout-2").choose(sticky_key=u)[0] is Colour.GREEN
    }
    assert first != second


@pytest.mark.parametrize("weight_bp", [0, 1, 100, 1000, 1001, 2500, 5000, 9999, 10000])
def test_unkeyed_split_is_exact_in_every_window_of_100(weight_bp: int) -> None:
    router = Router(weight_bp)
    picks = [router.choose()[0] is Colour.GREEN for _ in range(5000)]
    expected = weight_bp * 100 / BASIS_POINTS
    for start in range(len(picks) - 100):
        assert abs(sum(picks[start : start + 100]) - expected) <= 1


@given(weight=weights_bp, count=st.integers(min_value=1, max_value=3000))
def test_unkeyed_split_never_drifts(weight: int, count: int) -> None:
    router = Router(weight)
    green = sum(router.choose()[0] is Colour.GREEN for _ in range(count))
    assert abs(green - count * weight / BASIS_POINTS) < 1


def test_unkeyed_requests_are_weighted() -> None:
    assert Router(5000).choose()[1] is Reason.WEIGHTED


@pytest.mark.parametrize("weight_bp", [0, 5000, 10000])
@pytest.mark.parametrize("colour", [Colour.BLUE, Colour.GREEN])
def test_override_pins_the_colour_whatever_the_weight(weight_bp: int, colour: Colour) -> None:
    router = Router(weight_bp)
    assert router.choose(sticky_key=b"someone", override=colour) == (colour, Reason.OVERRIDE)


def test_set_weights_rejects_out_of_range() -> None:
    router = Router(1000)
    with pytest.raises(ValueError, match="out of range"):
        router.set_weights(10_001)
    with pytest.raises(ValueError, match="out of range"):
        router.set_weights(500, mirror_bp=-1)
    assert router.green_bp == 1000


def test_set_weights_keeps_salt_and_mirror_unless_given() -> None:
    router = Router(1000, salt=b"a", mirror_bp=200)
    router.set_weights(2000)
    assert (router.green_bp, router.salt, router.mirror_bp) == (2000, b"a", 200)
    router.set_weights(3000, salt=b"b", mirror_bp=0)
    assert (router.green_bp, router.salt, router.mirror_bp) == (3000, b"b", 0)


def test_mirroring_copies_the_configured_share_of_safe_blue_requests() -> None:
    router = Router(0, mirror_bp=2500)
    mirrored = sum(router.should_mirror(b"GET", Colour.BLUE) for _ in range(400))
    assert mirrored == 100


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH"])
def test_mirroring_never_copies_writes(method: bytes) -> None:
    router = Router(0, mirror_bp=BASIS_POINTS)
    assert not any(router.should_mirror(method, Colour.BLUE) for _ in range(10))


def test_mirroring_skips_requests_green_already_serves() -> None:
    router = Router(5000, mirror_bp=BASIS_POINTS)
    assert not router.should_mirror(b"GET", Colour.GREEN)
    assert router.should_mirror(b"HEAD", Colour.BLUE)


def test_mirroring_off_by_default() -> None:
    router = Router(5000)
    assert not any(router.should_mirror(b"GET", Colour.BLUE) for _ in range(100))


def test_routing_is_pure() -> None:
    code = (
        "import sys, bluegreen.routing; "
        "print(','.join(m for m in ('asyncio', 'aiohttp', 'asyncpg', 'random') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_router_weight_of_each_colour_adds_up_to_everything() -> None:
    router = Router(green_bp=2_500)
    assert router.weight_bp(Colour.GREEN) == 2_500
    assert router.weight_bp(Colour.BLUE) == 7_500
    router.set_weights(BASIS_POINTS)
    assert router.weight_bp(Colour.BLUE) == 0
