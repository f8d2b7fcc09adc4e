"""The admin API's pure parts: parsing, auth comparison, events, stats, the route table."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from bluegreen.admin import (
    ROUTES,
    AdminContext,
    Route,
    _allowed_methods,
    catch_up,
    change_event,
    create_app,
    parse_if_match,
    parse_percent,
    parse_wait,
    replicas_summary,
    state_changes,
    stats_over,
    token_matches,
)
from bluegreen.admin_openapi import WAIT_PATTERN, WINDOW_PATTERN, build_document
from bluegreen.errors import InvalidFieldError
from bluegreen.metrics import ColourStats, StatsSnapshot
from bluegreen.routing import Colour
from bluegreen.state.model import Flag, initial_document, with_flag, with_weights, without_flag

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TOKEN = "s3cret-token-0123456789"  # noqa: S105 - a test token


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("500ms", 0.5), ("1m", 60.0), ("2.5", 2.5), ("0", 0.0), ("300s", 300.0),
     ("300000ms", 300.0), ("5m", 300.0), ("299.999999s", 299.999999)],
)  # fmt: skip
def test_wait_durations(text: str, seconds: float) -> None:
    assert parse_wait(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", " 5s", "5s ", "5 s", "-1s", "1h", "301s", "300001ms", "5.1m", "1e3", "٣s", "0x10"]
)
def test_bad_wait_durations_name_the_field(text: str) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        parse_wait(text)
    assert caught.value.field == "wait"


def test_the_wait_pattern_and_the_range_check_agree_everywhere() -> None:
    # The OpenAPI document promises exactly what the server accepts.
    pattern, window = re.compile(WAIT_PATTERN), re.compile(WINDOW_PATTERN)
    candidates = [f"{n}{u}" for n in range(0, 400_000, 997) for u in ("", "s", "ms", "m")]
    candidates += [
        f"{n}.{d}{u}" for n in range(0, 310, 7) for d in (0, 5, 999999) for u in ("", "s", "m")
    ]
    for text in candidates:
        try:
            parse_wait(text)
            accepted = True
        except InvalidFieldError:
            accepted = False
        assert accepted == bool(pattern.fullmatch(text)), text
        try:
            parse_wait(text, window=True)
            accepted = True
        except InvalidFieldError:
            accepted = False
        assert accepted == bool(window.fullmatch(text)), text


# --------------------------------------------------------------------------- headers and values


@pytest.mark.parametrize(
    ("header", "version"), [(None, None), ("*", None), ("42", 42), ('"42"', 42), (" 7 ", 7)]
)
def test_if_match(header: str | None, version: int | None) -> None:
    assert parse_if_match(header) == version


@pytest.mark.parametrize("header", ['W/"3"', "abc", '"3', "1,2", "-1", "٣", "1" * 19])
def test_bad_if_match_names_the_header(header: str) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        parse_if_match(header)
    assert caught.value.field == "If-Match"


@pytest.mark.parametrize(("value", "bp"), [(0, 0), (10, 1000), (12.34, 1234), (100, 10000)])
def test_percent(value: float, bp: int) -> None:
    assert parse_percent(value, "green") == bp


@pytest.mark.parametrize("value", [-0.01, 100.01, 1.001, True, "5", None, float("inf"), 10**400])
def test_bad_percent_names_the_field(value: object) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        parse_percent(value, "green")
    assert caught.value.field == "green"


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer  {TOKEN} ", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer", False),
        ("", False),
        (None, False),
        ("Bearer \udcff", False),  # undecodable bytes as aiohttp hands them over
    ],
    ids=["exact", "scheme-case", "spaces", "longer", "shorter", "basic", "no-scheme",
         "no-token", "empty", "missing", "surrogate"],
)  # fmt: skip
def test_token_matches(header: str | None, ok: bool) -> None:
    assert token_matches(header, TOKEN) is ok


# --------------------------------------------------------------------------- events


def test_state_changes_names_only_what_changed() -> None:
    doc = initial_document(actor="t", now=NOW)
    weights = with_weights(doc, 1000, "t", NOW)
    assert set(state_changes(doc, weights)) == {"weights"}
    assert state_changes(doc, weights)["weights"]["green"] == 10
    flagged = with_flag(weights, Flag("beta", percent_bp=500), "t", NOW)
    changes = state_changes(weights, flagged)
    assert set(changes) == {"flags"}
    assert changes["flags"]["set"]["beta"]["percent"] == 5
    gone = without_flag(flagged, "beta", "t", NOW)
    assert state_changes(flagged, gone) == {"flags": {"set": {}, "deleted": ["beta"]}}


def _frame(raw: bytes) -> dict[str, object]:
    fields: dict[str, object] = {}
    for line in raw.decode().strip().split("\n"):
        name, _, value = line.partition(": ")
        fields[name] = json.loads(value) if name == "data" else value
    return fields


def test_one_version_is_one_event_of_its_kind() -> None:
    doc = initial_document(actor="t", now=NOW)
    new = with_weights(doc, 2500, "t", NOW)
    new = type(new)(**{**{f: getattr(new, f) for f in new.__slots__}, "version": 2})
    frame = _frame(change_event(doc, new))
    assert frame["event"] == "weights_changed"
    assert frame["id"] == "2"


def test_several_versions_coalesce_into_state_changed() -> None:
    v1 = initial_document(actor="t", now=NOW)
    v2 = with_weights(v1, 100, "t", NOW)
    v2 = type(v2)(**{**{f: getattr(v2, f) for f in v2.__slots__}, "version": 2})
    v3 = with_flag(v2, Flag("x"), "t", NOW)
    v3 = type(v3)(**{**{f: getattr(v3, f) for f in v3.__slots__}, "version": 3})
    frame = _frame(change_event(v1, v3))
    assert frame["event"] == "state_changed"
    data = frame["data"]
    assert isinstance(data, dict)
    assert [h["kind"] for h in data["history"]] == ["weights_changed", "flag_set"]
    assert set(data["changes"]) == {"weights", "flags"}


def test_catch_up_sends_a_snapshot_unless_history_covers_the_gap() -> None:
    doc = initial_document(actor="t", now=NOW)
    assert [_frame(f)["event"] for f in catch_up(doc, None)] == ["snapshot"]
    assert catch_up(doc, 1) == []
    assert [_frame(f)["event"] for f in catch_up(doc, 99)] == ["snapshot"]  # from the future
    assert [_frame(f)["event"] for f in catch_up(doc, 0)] == ["state_created"]


# --------------------------------------------------------------------------- stats and summaries


def _snapshot(at: float, blue: int, green: int, slow: int = 0) -> StatsSnapshot:
    b, g = ColourStats(Colour.BLUE), ColourStats(Colour.GREEN)
    for _ in range(blue):
        b.observe(200, 0.004)
    for _ in range(green):
        g.observe(500, 0.004)
    for _ in range(slow):
        g.observe(200, 100.0)
    return StatsSnapshot(at=at, blue=b.snapshot(), green=g.snapshot())


def test_stats_over_a_window() -> None:
    samples = [_snapshot(0, 0, 0), _snapshot(5, 10, 0), _snapshot(10, 20, 10)]
    body = stats_over(samples, _snapshot(15, 50, 10), window=10)
    assert body["window_seconds"] == 10
    blue, green = body["colours"]["blue"], body["colours"]["green"]
    assert blue["requests"] == 40
    assert blue["rate_per_second"] == 4
    assert blue["p50_seconds"] == 0.005
    assert green["requests"] == 10
    assert green["error_ratio"] == 1


def test_stats_without_requests_have_no_quantiles_and_slow_ones_are_counted() -> None:
    body = stats_over([_snapshot(0, 0, 0)], _snapshot(1, 0, 0, slow=3), window=10)
    assert body["colours"]["blue"]["p99_seconds"] is None
    assert body["colours"]["green"]["p99_seconds"] is None  # slower than the last bucket
    assert body["colours"]["green"]["slower_than_last_bucket"] == 3


@pytest.mark.parametrize(
    ("live", "current", "text"),
    [
        (3, 3, "all 3 live replicas run version 42"),
        (1, 1, "all 1 live replica run version 42"),
        (3, 2, "2 of 3 live replicas run version 42"),
        (0, 0, "no live replica"),
    ],
)
def test_replicas_summary(live: int, current: int, text: str) -> None:
    assert replicas_summary(42, live, current) == text


# --------------------------------------------------------------------------- route table


def test_allowed_methods_prefers_a_literal_path_like_the_router() -> None:
    assert _allowed_methods(ROUTES, "/api/v1/flags/evaluate") == ["GET"]
    assert _allowed_methods(ROUTES, "/api/v1/flags/beta") == ["DELETE", "GET", "PUT"]
    assert _allowed_methods(ROUTES, "/api/v1/weights") == ["GET", "PUT"]


def test_every_route_has_an_operation_and_mutating_ones_are_secured() -> None:
    document = build_document(ROUTES)
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert operation["operationId"] == route.operation_id
        responses = operation["responses"]
        assert all(r.get("description") for r in responses.values())
        if route.mutating:
            assert operation["security"] == [{"bearer": []}]
            assert {"401", "403", "413", "422"} <= set(responses)
        else:
            assert "security" not in operation


async def _noop(_: object) -> None:  # pragma: no cover - never called
    raise AssertionError


def test_a_route_without_an_operation_is_refused() -> None:
    with pytest.raises(KeyError, match="no OpenAPI operation 'nope'"):
        build_document([*ROUTES, Route("POST", "/api/v1/x", _noop, "nope", mutating=True)])  # type: ignore[arg-type]


def test_a_route_module_brings_its_own_operation() -> None:
    extra = Route(
        "POST",
        "/api/v1/rollout",
        _noop,  # type: ignore[arg-type]
        "startRollout",
        mutating=True,
        operation={"summary": "Start.", "responses": {"202": {"description": "Started."}}},
    )
    document = build_document([*ROUTES, extra])
    operation = document["paths"]["/api/v1/rollout"]["post"]
    assert operation["security"] == [{"bearer": []}]
    assert "401" in operation["responses"]


async def test_a_route_declared_twice_is_refused() -> None:
    from bluegreen.state import open_store

    store = open_store("file:/nonexistent/never-opened.json", actor="t")
    with pytest.raises(ValueError, match="declared twice"):
        create_app(AdminContext(store=store, actor="t"), extra_routes=[ROUTES[0]])
