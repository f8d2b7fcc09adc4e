"""The state document: weights, flags, rollout record and recent history. Pure.

Theory of operation
-------------------
Everything several proxy replicas must agree on lives in one
:class:`StateDocument`. It carries a ``version`` that only the store assigns:
a write is a compare-and-set "replace version N by this document", stored as
version N + 1. Writers therefore never edit a document in place; they take the
document they read, derive a new one with a functional update
(:func:`with_weights`, :func:`with_flag`, :func:`without_flag`,
:func:`with_rollout`, :func:`with_history`) and hand both to the store. The
updates stamp ``updated_at``/``updated_by`` and append a :class:`HistoryEntry`
for the version the write will create (``doc.version + 1``), keeping the last
:data:`HISTORY_LIMIT` entries. An update that changes nothing returns the very
same object, so callers (and ``StateStore.update``) can skip the write.

``green_weight_bp`` is always the share of the colour named green; ``live``
says which colour is the stable one. After a promotion roles alternate: the
colour at 100 % becomes live and the next rollout ramps the other one
(:func:`candidate`). ``rollout`` is an opaque JSON object owned by the rollout
controller; this module only checks that it is JSON.

The JSON form (:func:`to_json` / :func:`from_json`) is strict: unknown keys,
wrong types and out-of-range values raise :class:`~bluegreen.errors.StateError`
naming the field, because a document we half understand must never be
served. Validation of single values raises
:class:`~bluegreen.errors.InvalidFieldError` (a ``ValueError``) naming the
field, which the admin API turns into a 422.

No I/O, no clock, no randomness: ``now`` is always passed in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeVar

from bluegreen.errors import InvalidFieldError, StateError
from bluegreen.routing import BASIS_POINTS, Colour

_T = TypeVar("_T")

SCHEMA_VERSION: Final = 1
HISTORY_LIMIT: Final = 200
MAX_FLAGS: Final = 1_000
MAX_ALLOW: Final = 10_000
MAX_KEY_CHARS: Final = 256
MAX_TEXT_CHARS: Final = 1_000
MAX_SALT_BYTES: Final = 64  # routing keys blake2b with at most 64 bytes of salt
FLAG_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # also the OpenAPI pattern

_FLAG_NAME = re.compile(FLAG_NAME_PATTERN)
_REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class HistoryKind(StrEnum):
    """Kinds of history entries bluegreen itself writes (others may add their own)."""

    STATE_CREATED = "state_created"
    WEIGHTS_CHANGED = "weights_changed"
    FLAG_SET = "flag_set"
    FLAG_DELETED = "flag_deleted"
    ROLLOUT_UPDATED = "rollout_updated"
    ROLLOUT_PHASE = "rollout_phase"


# --------------------------------------------------------------------------- time


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: ``2024-05-01T12:00:00.000Z``."""
    if moment.tzinfo is None:
        raise InvalidFieldError("now", "expected a timezone-aware datetime, got a naive one")
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def parse_time(text: object, field_name: str) -> datetime:
    """Parse an ISO-8601 timestamp with a timezone; raise naming ``field_name``."""
    if not isinstance(text, str):
        raise InvalidFieldError(field_name, f"expected an ISO-8601 timestamp, got {text!r}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidFieldError(
            field_name, f"expected an ISO-8601 timestamp, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise InvalidFieldError(field_name, f"timestamp {text!r} has no timezone; add Z")
    return moment


# --------------------------------------------------------------------------- validators


def check_bp(value: object, field_name: str) -> int:
    """Return ``value`` if it is an integer 0..10000 (basis points), else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFieldError(field_name, f"expected an integer 0..{BASIS_POINTS}, got {value!r}")
    if not 0 <= value <= BASIS_POINTS:
        raise InvalidFieldError(
            field_name, f"{value} out of range; use 0..{BASIS_POINTS} basis points (0.01 %)"
        )
    return value


def check_colour(value: object, field_name: str) -> Colour:
    """Return the :class:`Colour` named by ``value`` (``blue``/``green``), else raise."""
    if isinstance(value, Colour):
        return value
    if isinstance(value, str) and value in ("blue", "green"):
        return Colour(value)
    raise InvalidFieldError(field_name, f'expected "blue" or "green", got {value!r}')


def check_text(
    value: object, field_name: str, *, max_chars: int = MAX_TEXT_CHARS, empty_ok: bool = False
) -> str:
    """Return ``value`` if it is a string without control characters, else raise."""
    if not isinstance(value, str):
        raise InvalidFieldError(field_name, f"expected a string, got {value!r}")
    if not value and not empty_ok:
        raise InvalidFieldError(field_name, "must not be empty")
    if len(value) > max_chars:
        raise InvalidFieldError(field_name, f"too long ({len(value)} characters, max {max_chars})")
    if _CONTROL.search(value):
        raise InvalidFieldError(field_name, "must not contain control characters")
    return value


def check_salt(value: object, field_name: str, *, empty_ok: bool = False) -> str:
    """Return ``value`` if it is a usable routing salt (1..64 UTF-8 bytes), else raise."""
    text = check_text(value, field_name, max_chars=MAX_SALT_BYTES, empty_ok=empty_ok)
    if len(text.encode()) > MAX_SALT_BYTES:
        raise InvalidFieldError(field_name, f"longer than {MAX_SALT_BYTES} bytes in UTF-8")
    return text


def check_flag_name(value: object, field_name: str = "name") -> str:
    """Return ``value`` if it is a valid flag name, else raise.

    Names travel in a request header (``X-Bluegreen-Flags: a,b``), so they are
    limited to letters, digits, ``_``, ``.`` and ``-`` (1..64, not starting
    with punctuation).
    """
    if not isinstance(value, str) or not _FLAG_NAME.fullmatch(value):
        raise InvalidFieldError(
            field_name,
            f"invalid flag name {value!r}; use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
        )
    return value


def check_kind(value: object, field_name: str = "kind") -> str:
    """Return ``value`` if it is a snake_case history kind, else raise."""
    if not isinstance(value, str) or not _KIND.fullmatch(value):
        raise InvalidFieldError(field_name, f"expected a snake_case event name, got {value!r}")
    return value


def check_replica_id(value: object, field_name: str = "id") -> str:
    """Return ``value`` if it is a valid replica id (safe as a file name), else raise."""
    if not isinstance(value, str) or not _REPLICA_ID.fullmatch(value):
        raise InvalidFieldError(
            field_name,
            f"invalid replica id {value!r}; use 1-128 letters, digits, '_', '.', ':', '@' or '-'",
        )
    return value


def json_type_name(value: object) -> str:
    """How messages name the JSON type of ``value``: ``null``, ``a string``, ``an array``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def check_json_object(value: object, field_name: str) -> dict[str, Any]:
    """Deep-copy a JSON object, refusing anything JSON cannot represent exactly."""
    if not isinstance(value, Mapping):
        raise InvalidFieldError(field_name, f"expected a JSON object, got {type(value).__name__}")
    copied = _copy_json(value, field_name)
    assert isinstance(copied, dict)  # noqa: S101 - _copy_json keeps the container kind
    return copied


def _copy_json(value: object, where: str) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFieldError(where, f"{value} cannot be stored as JSON")
        return value
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidFieldError(where, f"object key {key!r} is not a string")
            out[key] = _copy_json(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_copy_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise InvalidFieldError(where, f"{type(value).__name__} cannot be stored as JSON")


def _check_int(value: object, field_name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFieldError(field_name, f"expected an integer, got {value!r}")
    if value < minimum:
        raise InvalidFieldError(field_name, f"{value} out of range; use >= {minimum}")
    return value


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Flag:
    """A feature flag served by the proxy (the seed's strategy 3).

    ``percent_bp`` of the sticky keys (hashed with ``salt``, or
    ``flag:<name>`` when empty, so monotone in the percentage like routing),
    plus the keys in ``allow``. A ``colour``, when set, comes first: requests
    routed to the other colour never get the flag, not even for an allow-listed
    key. The evaluation rules live in :mod:`bluegreen.flags`; this is only the
    stored value.
    """

    name: str
    percent_bp: int = 0
    allow: tuple[str, ...] = ()
    colour: Colour | None = None
    salt: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        check_flag_name(self.name, "name")
        check_bp(self.percent_bp, "percent_bp")
        if not isinstance(self.allow, tuple):
            raise InvalidFieldError("allow", f"expected a tuple of keys, got {self.allow!r}")
        if len(self.allow) > MAX_ALLOW:
            raise InvalidFieldError("allow", f"{len(self.allow)} keys; at most {MAX_ALLOW}")
        for i, key in enumerate(self.allow):
            check_text(key, f"allow[{i}]", max_chars=MAX_KEY_CHARS)
        if len(set(self.allow)) != len(self.allow):
            raise InvalidFieldError("allow", "contains duplicate keys")
        if self.colour is not None:
            object.__setattr__(self, "colour", check_colour(self.colour, "colour"))
        check_salt(self.salt, "salt", empty_ok=True)
        check_text(self.description, "description", empty_ok=True)

    @property
    def effective_salt(self) -> str:
        """The salt used for hashing: ``salt``, or ``flag:<name>`` when empty."""
        return self.salt or f"flag:{self.name}"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change to the document: when, which version, who, what."""

    at: str
    version: int
    actor: str
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_time(self.at, "at")
        _check_int(self.version, "version")
        check_text(self.actor, "actor", max_chars=200)
        object.__setattr__(self, "kind", str(check_kind(self.kind, "kind")))
        if not isinstance(self.detail, Mapping):
            raise InvalidFieldError("detail", "expected a JSON object")


@dataclass(frozen=True, slots=True)
class StateDocument:
    """Everything the replicas share; ``version`` is assigned by the store.

    Treat ``rollout`` and history ``detail`` as read-only: derive new
    documents with the ``with_*`` functions instead of mutating.
    """

    version: int
    green_weight_bp: int
    live: Colour
    salt: str
    mirror_bp: int
    flags: Mapping[str, Flag]
    rollout: Mapping[str, Any] | None
    history: tuple[HistoryEntry, ...]
    updated_at: str
    updated_by: str

    def __post_init__(self) -> None:
        _check_int(self.version, "version")
        check_bp(self.green_weight_bp, "green_weight_bp")
        object.__setattr__(self, "live", check_colour(self.live, "live"))
        check_salt(self.salt, "salt")
        check_bp(self.mirror_bp, "mirror_bp")
        if not isinstance(self.flags, Mapping):
            raise InvalidFieldError("flags", "expected a mapping of name to Flag")
        if len(self.flags) > MAX_FLAGS:
            raise InvalidFieldError("flags", f"{len(self.flags)} flags; at most {MAX_FLAGS}")
        for name, flag in self.flags.items():
            if not isinstance(flag, Flag) or flag.name != name:
                raise InvalidFieldError(f"flags.{name}", "expected a Flag with the same name")
        # A read-only view sorted by name: stable JSON, no mutation through .flags.
        frozen = MappingProxyType(dict(sorted(self.flags.items())))
        object.__setattr__(self, "flags", frozen)
        if self.rollout is not None and not isinstance(self.rollout, Mapping):
            raise InvalidFieldError("rollout", "expected a JSON object or null")
        if not isinstance(self.history, tuple) or not all(
            isinstance(entry, HistoryEntry) for entry in self.history
        ):
            raise InvalidFieldError("history", "expected a tuple of HistoryEntry")
        parse_time(self.updated_at, "updated_at")
        check_text(self.updated_by, "updated_by", max_chars=200)

    def weight_bp(self, colour: Colour) -> int:
        """The traffic share of ``colour`` in basis points."""
        return (
            self.green_weight_bp if colour is Colour.GREEN else BASIS_POINTS - self.green_weight_bp
        )


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """What a proxy replica reports in its heartbeat."""

    id: str
    applied_version: int
    host: str
    pid: int
    listen: str
    started_at: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_replica_id(self.id, "id")
        _check_int(self.applied_version, "applied_version")
        check_text(self.host, "host", max_chars=255)
        _check_int(self.pid, "pid")
        check_text(self.listen, "listen", max_chars=255, empty_ok=True)
        parse_time(self.started_at, "started_at")
        if not isinstance(self.extra, Mapping):
            raise InvalidFieldError("extra", "expected a JSON object")


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """A replica as the store last saw it.

    ``alive`` means its heartbeat is younger than the expiry and it did not
    stop; ``stopped`` means it closed its store cleanly.
    """

    info: ReplicaInfo
    heartbeat_at: str
    age_seconds: float
    alive: bool
    stopped: bool = False


# --------------------------------------------------------------------------- construction


def initial_document(
    *,
    actor: str,
    now: datetime,
    green_bp: int = 0,
    live: Colour = Colour.BLUE,
    salt: str = "bluegreen",
    mirror_bp: int = 0,
) -> StateDocument:
    """The document a store creates when none exists yet (version 1)."""
    at = format_time(now)
    entry = HistoryEntry(
        at=at,
        version=1,
        actor=actor,
        kind=HistoryKind.STATE_CREATED,
        detail={"green_bp": green_bp, "live": str(live), "mirror_bp": mirror_bp},
    )
    return StateDocument(
        version=1,
        green_weight_bp=green_bp,
        live=live,
        salt=salt,
        mirror_bp=mirror_bp,
        flags={},
        rollout=None,
        history=(entry,),
        updated_at=at,
        updated_by=actor,
    )


def candidate(doc: StateDocument) -> Colour:
    """The colour the next rollout ramps up: the one that is not live."""
    return doc.live.other


# --------------------------------------------------------------------------- updates


def with_history(
    doc: StateDocument,
    kind: str,
    actor: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> StateDocument:
    """Append one history entry (``kind`` is snake_case) for the next version.

    For events that change no field, e.g. the controller recording a smoke
    test result. Keeps the last :data:`HISTORY_LIMIT` entries.
    """
    return _record(doc, kind, actor, now, detail)


def _record(
    doc: StateDocument,
    kind: str,
    actor: str,
    now: datetime,
    detail: Mapping[str, Any] | None,
    **changes: Any,
) -> StateDocument:
    """Apply ``changes`` and append the history entry describing them."""
    at = format_time(now)
    entry = HistoryEntry(
        at=at,
        version=doc.version + 1,
        actor=check_text(actor, "actor", max_chars=200),
        kind=check_kind(kind),
        detail=check_json_object(detail or {}, "detail"),
    )
    history = (*doc.history, entry)[-HISTORY_LIMIT:]
    return dataclasses.replace(doc, history=history, updated_at=at, updated_by=actor, **changes)


def with_weights(
    doc: StateDocument,
    green_bp: int,
    actor: str,
    now: datetime,
    *,
    mirror_bp: int | None = None,
    salt: str | None = None,
    live: Colour | None = None,
    reason: str | None = None,
) -> StateDocument:
    """Set green's weight (and optionally mirror share, salt, live colour) in one change.

    ``None`` keeps a value. Returns ``doc`` itself when nothing changes.
    """
    new = {
        "green_weight_bp": check_bp(green_bp, "green_weight_bp"),
        "mirror_bp": doc.mirror_bp if mirror_bp is None else check_bp(mirror_bp, "mirror_bp"),
        "salt": doc.salt if salt is None else check_salt(salt, "salt"),
        "live": doc.live if live is None else check_colour(live, "live"),
    }
    changed = {k: v for k, v in new.items() if getattr(doc, k) != v}
    if not changed:
        return doc
    detail: dict[str, Any] = {
        k: {"from": _jsonable(getattr(doc, k)), "to": _jsonable(v)} for k, v in changed.items()
    }
    if "salt" in detail:  # the salt is not secret, but history need not repeat it
        detail["salt"] = {"changed": True}
    if reason is not None:
        detail["reason"] = check_text(reason, "reason")
    return _record(doc, HistoryKind.WEIGHTS_CHANGED, actor, now, detail, **changed)


def with_flag(doc: StateDocument, flag: Flag, actor: str, now: datetime) -> StateDocument:
    """Create or replace ``flag``. Returns ``doc`` itself when it is already so."""
    if not isinstance(flag, Flag):
        raise InvalidFieldError("flag", f"expected a Flag, got {type(flag).__name__}")
    previous = doc.flags.get(flag.name)
    if previous == flag:
        return doc
    if previous is None and len(doc.flags) >= MAX_FLAGS:
        raise InvalidFieldError("flags", f"already {MAX_FLAGS} flags; delete one first")
    detail: dict[str, Any] = {
        "name": flag.name,
        "created": previous is None,
        "percent_bp": {
            "from": None if previous is None else previous.percent_bp,
            "to": flag.percent_bp,
        },
        "allow_count": len(flag.allow),
        "colour": None if flag.colour is None else str(flag.colour),
    }
    flags = {**doc.flags, flag.name: flag}
    return _record(doc, HistoryKind.FLAG_SET, actor, now, detail, flags=flags)


def without_flag(doc: StateDocument, name: str, actor: str, now: datetime) -> StateDocument:
    """Delete the flag ``name``; raises ``KeyError`` if there is none."""
    if name not in doc.flags:
        raise KeyError(name)
    flags = {k: v for k, v in doc.flags.items() if k != name}
    detail = {"name": name, "percent_bp": doc.flags[name].percent_bp}
    return _record(doc, HistoryKind.FLAG_DELETED, actor, now, detail, flags=flags)


def with_rollout(
    doc: StateDocument,
    rollout: Mapping[str, Any] | None,
    actor: str,
    now: datetime,
    *,
    kind: str = HistoryKind.ROLLOUT_UPDATED,
    detail: Mapping[str, Any] | None = None,
) -> StateDocument:
    """Replace the rollout record (``None`` clears it), recording ``kind``/``detail``.

    The record is deep-copied and must be JSON; the controller owns its schema.
    Returns ``doc`` itself when the record is unchanged and no detail is given.
    """
    record = None if rollout is None else check_json_object(rollout, "rollout")
    if record == doc.rollout and detail is None:
        return doc
    return _record(doc, kind, actor, now, detail, rollout=record)


# --------------------------------------------------------------------------- JSON


def _jsonable(value: object) -> object:
    return str(value) if isinstance(value, Colour) else value


def flag_to_dict(flag: Flag) -> dict[str, Any]:
    """The JSON form of a flag (``name`` included)."""
    return {
        "name": flag.name,
        "percent_bp": flag.percent_bp,
        "allow": list(flag.allow),
        "colour": None if flag.colour is None else str(flag.colour),
        "salt": flag.salt,
        "description": flag.description,
    }


_FLAG_KEYS: Final = frozenset({"name", "percent_bp", "allow", "colour", "salt", "description"})


def flag_from_dict(obj: object, *, name: str | None = None, prefix: str = "") -> Flag:
    """Parse a flag strictly; unknown keys and bad values raise naming ``prefix + field``.

    ``name`` supplies the name when the object has none (e.g. from the URL);
    if both are given they must agree.
    """
    try:
        return _flag_from_dict(obj, name)
    except InvalidFieldError as exc:
        if not prefix:
            raise
        raise InvalidFieldError(f"{prefix}{exc.field}", exc.problem) from None


def _flag_from_dict(obj: object, name: str | None) -> Flag:
    if not isinstance(obj, Mapping):
        raise InvalidFieldError("flag", "expected a JSON object")
    unknown = sorted(set(obj) - _FLAG_KEYS)
    if unknown:
        raise InvalidFieldError(str(unknown[0]), "unknown field")
    flag_name = obj.get("name", name)
    if name is not None and flag_name != name:
        raise InvalidFieldError("name", f"{flag_name!r} does not match {name!r}")
    allow = obj.get("allow", [])
    if not isinstance(allow, list | tuple):
        raise InvalidFieldError("allow", f"expected a list of keys, got {allow!r}")
    colour = obj.get("colour")
    return Flag(
        name=check_flag_name(flag_name),
        percent_bp=check_bp(obj.get("percent_bp", 0), "percent_bp"),
        allow=tuple(allow),
        colour=None if colour is None else check_colour(colour, "colour"),
        salt=obj.get("salt", ""),
        description=obj.get("description", ""),
    )


def history_entry_to_dict(entry: HistoryEntry) -> dict[str, Any]:
    """The JSON form of a history entry."""
    return {
        "at": entry.at,
        "version": entry.version,
        "actor": entry.actor,
        "kind": entry.kind,
        "detail": dict(entry.detail),
    }


def document_to_dict(doc: StateDocument) -> dict[str, Any]:
    """The JSON form of the document (what the file holds and the API returns)."""
    return {
        "schema": SCHEMA_VERSION,
        "version": doc.version,
        "green_weight_bp": doc.green_weight_bp,
        "live": str(doc.live),
        "salt": doc.salt,
        "mirror_bp": doc.mirror_bp,
        "flags": {
            name: {k: v for k, v in flag_to_dict(flag).items() if k != "name"}
            for name, flag in doc.flags.items()
        },
        "rollout": None if doc.rollout is None else dict(doc.rollout),
        "history": [history_entry_to_dict(entry) for entry in doc.history],
        "updated_at": doc.updated_at,
        "updated_by": doc.updated_by,
    }


DOCUMENT_KEYS: Final = (
    "schema",
    "version",
    "green_weight_bp",
    "live",
    "salt",
    "mirror_bp",
    "flags",
    "rollout",
    "history",
    "updated_at",
    "updated_by",
)
_ENTRY_KEYS: Final = ("at", "version", "actor", "kind", "detail")


def _require_keys(obj: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(obj) - set(keys))
    if unknown:
        raise InvalidFieldError(f"{where}{unknown[0]}", "unknown field")
    for key in keys:
        if key not in obj:
            raise InvalidFieldError(f"{where}{key}", "missing")


def document_from_dict(obj: object) -> StateDocument:
    """Parse the JSON form strictly; raises :class:`StateError` naming what is wrong."""
    try:
        return _document_from_dict(obj)
    except InvalidFieldError as exc:
        raise StateError(f"invalid state document: {exc}") from None


def _document_from_dict(obj: object) -> StateDocument:
    if not isinstance(obj, Mapping):
        raise InvalidFieldError("document", f"expected a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
        raise InvalidFieldError(
            "schema",
            f"written by a newer bluegreen (schema {schema}, this one reads "
            f"{SCHEMA_VERSION}); upgrade bluegreen",
        )
    _require_keys(obj, DOCUMENT_KEYS, "")
    if schema != SCHEMA_VERSION:
        raise InvalidFieldError("schema", f"expected {SCHEMA_VERSION}, got {schema!r}")
    raw_flags = obj["flags"]
    if not isinstance(raw_flags, Mapping):
        raise InvalidFieldError("flags", "expected a JSON object")
    flags: dict[str, Flag] = {}
    for name, raw in raw_flags.items():
        check_flag_name(name, f"flags.{name}")
        if isinstance(raw, Mapping) and "name" in raw:
            raise InvalidFieldError(f"flags.{name}.name", "unknown field")
        flags[name] = flag_from_dict(raw, name=name, prefix=f"flags.{name}.")
    rollout = obj["rollout"]
    if rollout is not None:
        rollout = check_json_object(rollout, "rollout")
    raw_history = obj["history"]
    if not isinstance(raw_history, list):
        raise InvalidFieldError("history", "expected a list")
    history = tuple(_entry_from_dict(raw, f"history[{i}].") for i, raw in enumerate(raw_history))
    return _build(
        StateDocument,
        "",
        version=obj["version"],
        green_weight_bp=obj["green_weight_bp"],
        live=check_colour(obj["live"], "live"),
        salt=obj["salt"],
        mirror_bp=obj["mirror_bp"],
        flags=flags,
        rollout=rollout,
        history=history,
        updated_at=obj["updated_at"],
        updated_by=obj["updated_by"],
    )


def _entry_from_dict(raw: object, where: str) -> HistoryEntry:
    if not isinstance(raw, Mapping):
        raise InvalidFieldError(where.rstrip("."), "expected a JSON object")
    _require_keys(raw, _ENTRY_KEYS, where)
    detail = check_json_object(raw["detail"], f"{where}detail")
    return _build(
        HistoryEntry,
        where,
        at=raw["at"],
        version=raw["version"],
        actor=raw["actor"],
        kind=raw["kind"],
        detail=detail,
    )


def _build(cls: type[_T], where: str, **values: Any) -> _T:
    """Construct ``cls``, prefixing the field name of a validation error with ``where``."""
    try:
        return cls(**values)
    except InvalidFieldError as exc:
        raise InvalidFieldError(f"{where}{exc.field}", exc.problem) from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def to_json(doc: StateDocument, *, indent: int | None = None) -> str:
    """Serialise the document (keys sorted; ``indent`` for files people read)."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(
        document_to_dict(doc),
        sort_keys=True,
        indent=indent,
        separators=separators,
        ensure_ascii=False,
        allow_nan=False,
    )


def from_json(text: str | bytes) -> StateDocument:
    """Parse a serialised document; any defect raises :class:`StateError` saying what."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StateError(f"state document is not UTF-8: byte {exc.start}") from None
    if not text.strip():
        raise StateError("state document is empty")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise StateError(
            f"state document is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise StateError(f"state document is not valid JSON: {exc}") from None
    return document_from_dict(obj)


def replica_info_to_dict(info: ReplicaInfo) -> dict[str, Any]:
    """The JSON form of a heartbeat's payload."""
    return {
        "id": info.id,
        "applied_version": info.applied_version,
        "host": info.host,
        "pid": info.pid,
        "listen": info.listen,
        "started_at": info.started_at,
        "extra": dict(info.extra),
    }


_REPLICA_KEYS: Final = ("id", "applied_version", "host", "pid", "listen", "started_at", "extra")


def replica_info_from_dict(obj: object) -> ReplicaInfo:
    """Parse a heartbeat payload strictly; raises :class:`InvalidFieldError`."""
    if not isinstance(obj, Mapping):
        raise InvalidFieldError("replica", "expected a JSON object")
    _require_keys(obj, _REPLICA_KEYS, "")
    extra = check_json_object(obj["extra"], "extra")
    return ReplicaInfo(**{**{k: obj[k] for k in _REPLICA_KEYS}, "extra": extra})


def replica_status_to_dict(status: ReplicaStatus) -> dict[str, Any]:
    """The JSON form of a replica's status (what the admin API lists)."""
    return {
        **replica_info_to_dict(status.info),
        "heartbeat_at": status.heartbeat_at,
        "age_seconds": round(status.age_seconds, 3),
        "alive": status.alive,
        "stopped": status.stopped,
    }
