"""The state document: JSON round-trip, strict parsing, validation, functional updates."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluegreen.errors import InvalidFieldError, StateError
from bluegreen.routing import BASIS_POINTS, Colour
from bluegreen.state.model import (
    HISTORY_LIMIT,
    Flag,
    HistoryEntry,
    HistoryKind,
    ReplicaInfo,
    StateDocument,
    candidate,
    document_from_dict,
    document_to_dict,
    flag_from_dict,
    flag_to_dict,
    format_time,
    from_json,
    initial_document,
    replica_info_from_dict,
    replica_info_to_dict,
    to_json,
    with_flag,
    with_history,
    with_rollout,
    with_weights,
    without_flag,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def base(**kwargs: Any) -> StateDocument:
    return initial_document(actor="tester", now=NOW, **kwargs)


# --------------------------------------------------------------------------- strategies

bp = st.integers(min_value=0, max_value=BASIS_POINTS)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
flag_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", fullmatch=True)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@st.composite
def flags(draw: st.DrawFn) -> Flag:
    return Flag(
        name=draw(flag_names),
        percent_bp=draw(bp),
        allow=tuple(draw(st.lists(text, max_size=5, unique=True))),
        colour=draw(st.sampled_from([None, Colour.BLUE, Colour.GREEN])),
        salt=draw(st.text(alphabet="abcdef0123456789", max_size=16)),
        description=draw(
            st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
        ),
    )


@st.composite
def documents(draw: st.DrawFn) -> StateDocument:
    entries = tuple(
        HistoryEntry(
            at=format_time(draw(moments)),
            version=draw(st.integers(min_value=0, max_value=10**9)),
            actor=draw(text),
            kind=draw(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)),
            detail=draw(json_objects),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=4)))
    )
    flag_list = draw(st.lists(flags(), max_size=4, unique_by=lambda f: f.name))
    return StateDocument(
        version=draw(st.integers(min_value=0, max_value=2**62)),
        green_weight_bp=draw(bp),
        live=draw(st.sampled_from(list(Colour))),
        salt=draw(st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=32)),
        mirror_bp=draw(bp),
        flags={f.name: f for f in flag_list},
        rollout=draw(st.none() | json_objects),
        history=entries,
        updated_at=format_time(draw(moments)),
        updated_by=draw(text),
    )


# --------------------------------------------------------------------------- round trip


@given(documents())
def test_json_round_trip_is_exact_and_canonical(doc: StateDocument) -> None:
    assert from_json(to_json(doc)) == doc
    assert from_json(to_json(doc, indent=2).encode()) == doc
    assert document_from_dict(json.loads(to_json(doc))) == doc
    assert to_json(from_json(to_json(doc))) == to_json(doc)


def test_initial_document_is_version_1_with_one_history_entry() -> None:
    doc = base(green_bp=0, salt="s1")
    assert doc.version == 1
    assert doc.live is Colour.BLUE
    assert doc.green_weight_bp == 0
    assert doc.flags == {}
    assert doc.rollout is None
    assert [(e.version, e.kind, e.actor) for e in doc.history] == [(1, "state_created", "tester")]
    assert doc.updated_at == "2024-05-01T12:00:00.000Z"


def test_timestamps_are_utc_with_z() -> None:
    moment = datetime(2024, 5, 1, 14, 30, 1, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2024-05-01T12:30:01.123Z"
    with pytest.raises(InvalidFieldError, match="naive"):
        format_time(datetime(2024, 5, 1))  # naive on purpose


# --------------------------------------------------------------------------- strict parsing


def _valid() -> dict[str, Any]:
    doc = with_flag(base(), Flag("beta", percent_bp=500), "tester", NOW)
    return document_to_dict(doc)


def _mutate(path: str, value: Any) -> dict[str, Any]:
    obj = _valid()
    target: Any = obj
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return obj


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("green_weight_bp", 10001, "green_weight_bp: 10001 out of range"),
        ("green_weight_bp", -1, "green_weight_bp: -1 out of range"),
        ("green_weight_bp", "10", "green_weight_bp: expected an integer"),
        ("green_weight_bp", True, "green_weight_bp: expected an integer"),
        ("mirror_bp", 1.5, "mirror_bp: expected an integer"),
        ("version", -3, "version: -3 out of range"),
        ("live", "red", 'live: expected "blue" or "green"'),
        ("salt", "", "salt: must not be empty"),
        ("salt", "x" * 65, "salt: too long"),
        ("updated_at", "yesterday", "updated_at: expected an ISO-8601 timestamp"),
        ("updated_at", "2024-05-01T12:00:00", "updated_at: timestamp .* has no timezone"),
        ("updated_by", "", "updated_by: must not be empty"),
        ("rollout", [1, 2], "rollout: expected a JSON object"),
        ("flags", [], "flags: expected a JSON object"),
        ("flags.beta.percent_bp", 20000, "flags.beta.percent_bp: 20000 out of range"),
        ("flags.beta.colour", "purple", 'flags.beta.colour: expected "blue" or "green"'),
        ("flags.beta.allow", "alice", "flags.beta.allow: expected a list"),
        ("flags.beta.surprise", 1, "flags.beta.surprise: unknown field"),
        ("flags.beta.name", "beta", "flags.beta.name: unknown field"),
        ("flags.bad name", {}, "flags.bad name: invalid flag name"),
        ("history", {}, "history: expected a list"),
        ("history.0.kind", "Not Snake", r"history\[0\].kind: expected a snake_case"),
        ("history.0.version", "1", r"history\[0\].version: expected an integer"),
        ("history.0.extra", 1, r"history\[0\].extra: unknown field"),
        ("history.0.at", _DELETE, r"history\[0\].at: missing"),
        ("schema", 0, "schema: expected 1"),
        ("schema", 7, "written by a newer bluegreen"),
        ("surprise", 1, "surprise: unknown field"),
        ("salt", _DELETE, "salt: missing"),
    ],
    ids=lambda v: v if isinstance(v, str) and v else None,
)
def test_from_json_names_what_is_wrong(path: str, value: Any, message: str) -> None:
    text = json.dumps(_mutate(path, value))
    with pytest.raises(StateError, match=message):
        from_json(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ('{"schema": 1,', "not valid JSON: line 1 column"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
    ],
    ids=["empty", "blank", "truncated", "list", "nan", "binary"],
)
def test_from_json_rejects_garbage(text: str | bytes, message: str) -> None:
    with pytest.raises(StateError, match=message):
        from_json(text)


def test_truncated_documents_never_parse() -> None:
    """Every proper prefix of a document is rejected (what a torn write would leave)."""
    full = to_json(with_weights(base(), 1000, "tester", NOW), indent=2)
    for cut in range(0, len(full) - 1, 7):
        with pytest.raises(StateError):
            from_json(full[:cut])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "has space"}, "name"),
        ({"name": "-leading"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "ok", "percent_bp": 10001}, "percent_bp"),
        ({"name": "ok", "percent_bp": -1}, "percent_bp"),
        ({"name": "ok", "allow": ["a"]}, "allow"),
        ({"name": "ok", "allow": ("a", "a")}, "allow"),
        ({"name": "ok", "allow": ("",)}, "allow[0]"),
        ({"name": "ok", "allow": ("a", "b\n")}, "allow[1]"),
        ({"name": "ok", "colour": "red"}, "colour"),
        ({"name": "ok", "salt": "s" * 65}, "salt"),
        ({"name": "ok", "description": "x" * 1001}, "description"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_flag_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidFieldError) as info:
        Flag(**kwargs)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_flag_colour_string_becomes_colour() -> None:
    assert Flag("x", colour="green").colour is Colour.GREEN  # type: ignore[arg-type]


def test_flag_default_salt_is_per_flag() -> None:
    assert Flag("a").effective_salt != Flag("b").effective_salt
    assert Flag("a", salt="s").effective_salt == "s"


def test_flag_from_dict_for_the_admin_api() -> None:
    flag = flag_from_dict({"percent_bp": 2500, "allow": ["u1"], "colour": "green"}, name="beta")
    assert flag == Flag("beta", percent_bp=2500, allow=("u1",), colour=Colour.GREEN)
    assert flag_from_dict(flag_to_dict(flag)) == flag
    with pytest.raises(InvalidFieldError) as info:
        flag_from_dict({"percent_bp": 5, "bogus": 1}, name="beta")
    assert info.value.field == "bogus"
    with pytest.raises(InvalidFieldError) as info:
        flag_from_dict({"name": "other"}, name="beta")
    assert info.value.field == "name"
    with pytest.raises(InvalidFieldError) as info:
        flag_from_dict({"name": "x", "percent_bp": 1e9}, prefix="body.")
    assert info.value.field == "body.percent_bp"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"green_weight_bp": 10001}, "green_weight_bp"),
        ({"mirror_bp": -5}, "mirror_bp"),
        ({"live": "purple"}, "live"),
        ({"version": -1}, "version"),
        ({"salt": ""}, "salt"),
        ({"flags": {"a": Flag("b")}}, "flags.a"),
        ({"history": [1]}, "history"),
        ({"updated_at": "now"}, "updated_at"),
    ],
    ids=lambda v: str(v)[:25],
)
def test_document_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    fields = {
        "version": 1,
        "green_weight_bp": 0,
        "live": Colour.BLUE,
        "salt": "s",
        "mirror_bp": 0,
        "flags": {},
        "rollout": None,
        "history": (),
        "updated_at": format_time(NOW),
        "updated_by": "t",
    }
    with pytest.raises(InvalidFieldError) as info:
        StateDocument(**{**fields, **kwargs})
    assert info.value.field == field


def test_flags_cannot_be_mutated_through_the_document() -> None:
    doc = with_flag(base(), Flag("a"), "t", NOW)
    with pytest.raises(TypeError):
        doc.flags["b"] = Flag("b")  # type: ignore[index]


def test_replica_info_round_trip_and_validation() -> None:
    info = ReplicaInfo(
        id="proxy-1@host:8080",
        applied_version=7,
        host="host",
        pid=123,
        listen="127.0.0.1:8080",
        started_at=format_time(NOW),
        extra={"admin": "127.0.0.1:9900"},
    )
    assert replica_info_from_dict(json.loads(json.dumps(replica_info_to_dict(info)))) == info
    with pytest.raises(InvalidFieldError) as exc:
        ReplicaInfo(
            id="../etc", applied_version=1, host="h", pid=1, listen="", started_at=format_time(NOW)
        )
    assert exc.value.field == "id"


# --------------------------------------------------------------------------- updates


def test_with_weights_records_from_and_to_and_bumps_nothing() -> None:
    doc = base()
    new = with_weights(doc, 1000, "alice", LATER, reason="step 1")
    assert new.version == doc.version
    assert new.green_weight_bp == 1000
    assert new.updated_by == "alice"
    assert new.updated_at == format_time(LATER)
    entry = new.history[-1]
    assert (entry.version, entry.kind, entry.actor) == (2, HistoryKind.WEIGHTS_CHANGED, "alice")
    assert entry.detail == {"green_weight_bp": {"from": 0, "to": 1000}, "reason": "step 1"}
    assert doc.green_weight_bp == 0  # the input is untouched


def test_with_weights_promotion_changes_live_and_salt_in_one_entry() -> None:
    doc = with_weights(base(), 5000, "c", NOW)
    promoted = with_weights(doc, BASIS_POINTS, "c", LATER, live=Colour.GREEN, salt="r2")
    assert promoted.live is Colour.GREEN
    assert candidate(promoted) is Colour.BLUE
    assert promoted.weight_bp(Colour.BLUE) == 0
    detail = promoted.history[-1].detail
    assert detail["live"] == {"from": "blue", "to": "green"}
    assert detail["salt"] == {"changed": True}
    assert len(promoted.history) == len(doc.history) + 1


def test_unchanged_update_returns_the_same_object() -> None:
    doc = with_flag(with_weights(base(), 1000, "t", NOW), Flag("a", percent_bp=1), "t", NOW)
    assert with_weights(doc, 1000, "t", LATER) is doc
    assert with_flag(doc, Flag("a", percent_bp=1), "t", LATER) is doc
    assert with_rollout(doc, None, "t", LATER) is doc


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda d: with_weights(d, 10001, "t", NOW), "green_weight_bp"),
        (lambda d: with_weights(d, 10, "t", NOW, mirror_bp=-1), "mirror_bp"),
        (lambda d: with_weights(d, 10, "t", NOW, live="x"), "live"),  # type: ignore[arg-type]
        (lambda d: with_weights(d, 10, "", NOW), "actor"),
        (lambda d: with_rollout(d, {"x": float("nan")}, "t", NOW), "rollout.x"),
        (lambda d: with_rollout(d, {"x": {1: 2}}, "t", NOW), "rollout.x"),
        (lambda d: with_rollout(d, {"x": object()}, "t", NOW), "rollout.x"),
        (lambda d: with_history(d, "Bad Kind", "t", NOW), "kind"),
    ],
    ids=["weight", "mirror", "live", "actor", "nan", "int-key", "object", "kind"],
)
def test_invalid_updates_raise_naming_the_field(call: Any, field: str) -> None:
    doc = base()
    with pytest.raises(InvalidFieldError) as info:
        call(doc)
    assert info.value.field == field


def test_flag_set_and_delete() -> None:
    doc = with_flag(base(), Flag("beta", percent_bp=100, allow=("u1", "u2")), "ops", NOW)
    assert doc.flags["beta"].allow == ("u1", "u2")
    assert doc.history[-1].kind == "flag_set"
    assert doc.history[-1].detail["created"] is True
    doc = with_flag(doc, Flag("beta", percent_bp=200), "ops", NOW)
    assert doc.history[-1].detail["created"] is False
    assert doc.history[-1].detail["percent_bp"] == {"from": 100, "to": 200}
    doc = without_flag(doc, "beta", "ops", LATER)
    assert "beta" not in doc.flags
    assert doc.history[-1].kind == "flag_deleted"
    with pytest.raises(KeyError):
        without_flag(doc, "beta", "ops", LATER)


def test_with_rollout_stores_a_deep_copy() -> None:
    record: dict[str, Any] = {"phase": "ramp", "steps": [10, 50, 100], "results": {"smoke": "ok"}}
    doc = with_rollout(
        base(), record, "controller", NOW, kind=HistoryKind.ROLLOUT_PHASE, detail={"to": "ramp"}
    )
    record["steps"].append(1)
    record["phase"] = "bake"
    assert doc.rollout == {"phase": "ramp", "steps": [10, 50, 100], "results": {"smoke": "ok"}}
    assert doc.history[-1].kind == "rollout_phase"
    assert doc.history[-1].detail == {"to": "ramp"}
    cleared = with_rollout(doc, None, "controller", LATER)
    assert cleared.rollout is None
    assert cleared.history[-1].kind == "rollout_updated"


def test_history_is_bounded_and_keeps_the_newest() -> None:
    doc = base()
    for i in range(1, HISTORY_LIMIT + 60):
        doc = with_weights(doc, i, "t", NOW)
        doc = dataclasses.replace(doc, version=doc.version + 1)  # what the store does
    assert len(doc.history) == HISTORY_LIMIT
    versions = [entry.version for entry in doc.history]
    assert versions == sorted(versions)
    assert versions[-1] == doc.version
    assert doc.history[-1].detail["green_weight_bp"]["to"] == HISTORY_LIMIT + 59


@given(st.lists(st.tuples(st.sampled_from(["w", "f", "d", "r"]), bp), max_size=30))
def test_any_sequence_of_updates_round_trips(ops: list[tuple[str, int]]) -> None:
    doc = base()
    for op, value in ops:
        if op == "w":
            doc = with_weights(doc, value, "t", NOW)
        elif op == "f":
            doc = with_flag(doc, Flag(f"f{value % 3}", percent_bp=value), "t", NOW)
        elif op == "d" and doc.flags:
            doc = without_flag(doc, next(iter(doc.flags)), "t", NOW)
        elif op == "r":
            doc = with_rollout(doc, {"step": value}, "t", NOW)
        assert len(doc.history) <= HISTORY_LIMIT
    assert from_json(to_json(doc)) == doc


# --------------------------------------------------------------------------- purity


def test_model_is_pure() -> None:
    code = (
        "import sys, bluegreen.state.model, bluegreen.state; "
        "heavy = ('asyncio', 'asyncpg', 'aiohttp', 'structlog'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
