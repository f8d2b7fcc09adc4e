"""The OpenAPI 3.1 document of the admin API, built from the route table.

Each :class:`~bluegreen.admin.Route` names an operation id; its operation
object lives in :data:`OPERATIONS` (or in the ``operations`` a route module
passes to :func:`build_document`). Component schemas are in :data:`SCHEMAS`.
:func:`build_document` fails loudly when a route has no operation, so the
document always describes every route; mutating routes get the bearer
security requirement and the 401/403 answers automatically.

The schemas say exactly what the server accepts (the fuzz test holds the
server to them in both directions): bodies reject unknown fields, texts
reject control characters, percentages are 0..100 in 0.01 steps.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from bluegreen import __version__
from bluegreen.routing import BASIS_POINTS
from bluegreen.state.model import (
    DOCUMENT_KEYS,
    FLAG_NAME_PATTERN,
    MAX_KEY_CHARS,
    MAX_TEXT_CHARS,
)

if TYPE_CHECKING:
    from bluegreen.admin import Route

JSON: Final = "application/json"
_NO_CONTROL: Final = r"^[^\x00-\x1f\x7f]*$"
# Durations as the API takes them (5s, 500ms, 1m, or plain seconds), with the
# range in the pattern itself so that the schema says exactly what is accepted.
WAIT_PATTERN: Final = (
    r"^(([0-9]{1,2}|[12][0-9]{2})(\.[0-9]{1,6})?s?|300(\.0{1,6})?s?"
    r"|([0-9]{1,5}|[12][0-9]{5}|300000)ms|[0-4](\.[0-9]{1,6})?m|5(\.0{1,6})?m)$"
)
WINDOW_PATTERN: Final = (
    r"^(([0-9]|[1-5][0-9])(\.[0-9]{1,6})?s?|60(\.0{1,6})?s?"
    r"|([0-9]{1,4}|[1-5][0-9]{4}|60000)ms|0(\.[0-9]{1,6})?m|1(\.0{1,6})?m)$"
)
IF_MATCH_PATTERN: Final = r'^(\*|[0-9]{1,18}|"[0-9]{1,18}")$'
EVENT_ID_PATTERN: Final = r"^[0-9]{0,18}$"
SALT_PATTERN: Final = r"^[\x20-\x7e]{0,64}$"
# Keys one PUT may allow-list: the largest such body (1000 keys of 256
# characters) still fits the default 1 MiB body limit. Larger audiences are
# what the percentage is for.
MAX_API_ALLOW: Final = 1000


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": dict(schema)}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json_content(_ref("Error"))}


_PERCENT: Final = {
    "type": "number",
    "minimum": 0,
    "maximum": 100,
    "multipleOf": 0.01,
    "description": "Percent of traffic, 0..100 in steps of 0.01.",
}
_TEXT: Final = {"type": "string", "maxLength": MAX_TEXT_CHARS, "pattern": _NO_CONTROL}
_COLOUR: Final = {"type": "string", "enum": ["blue", "green"]}
_VERSION: Final = {"type": "integer", "minimum": 0}
_BASIS_POINTS: Final = {"type": "integer", "minimum": 0, "maximum": BASIS_POINTS}

SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong and what to do."},
            "status": {"type": "integer"},
            "field": {"type": "string", "description": "The field, parameter or header at fault."},
            "expected_version": {**_VERSION, "description": "409: the version If-Match asked for."},
            "current_version": {**_VERSION, "description": "409: the version stored now."},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "data_plane"],
        "properties": {
            "status": {"const": "ok"},
            "version": {"type": "string"},
            # BLUEGREEN_COMPILE=1 builds the data plane with mypyc.
            "data_plane": {"enum": ["compiled", "interpreted"]},
        },
    },
    "Ready": {
        "type": "object",
        "required": ["ready", "checks"],
        "properties": {
            "ready": {"type": "boolean"},
            "checks": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["ok", "detail"],
                    "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}},
                },
            },
        },
    },
    "HistoryEntry": {
        "type": "object",
        "required": ["at", "version", "actor", "kind", "detail"],
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "version": _VERSION,
            "actor": {"type": "string"},
            "kind": {"type": "string"},
            "detail": {"type": "object"},
        },
    },
    "StoredFlag": {
        "type": "object",
        "required": ["percent_bp", "allow", "colour", "salt", "description"],
        "properties": {
            "percent_bp": _BASIS_POINTS,
            "allow": {"type": "array", "items": {"type": "string"}},
            "colour": {"oneOf": [_COLOUR, {"type": "null"}]},
            "salt": {"type": "string"},
            "description": {"type": "string"},
        },
    },
    "State": {
        "type": "object",
        "description": "The whole shared state document, as stored.",
        "required": list(DOCUMENT_KEYS),
        "properties": {
            "schema": {"type": "integer"},
            "version": _VERSION,
            "green_weight_bp": _BASIS_POINTS,
            "live": _COLOUR,
            "salt": {"type": "string"},
            "mirror_bp": _BASIS_POINTS,
            "flags": {"type": "object", "additionalProperties": _ref("StoredFlag")},
            "rollout": {"oneOf": [{"type": "object"}, {"type": "null"}]},
            "history": {"type": "array", "items": _ref("HistoryEntry")},
            "updated_at": {"type": "string", "format": "date-time"},
            "updated_by": {"type": "string"},
        },
    },
    "Weights": {
        "type": "object",
        "required": [
            "version",
            "green",
            "blue",
            "green_bp",
            "mirror",
            "live",
            "updated_at",
            "updated_by",
        ],
        "properties": {
            "version": _VERSION,
            "green": {"type": "number", "minimum": 0, "maximum": 100},
            "blue": {"type": "number", "minimum": 0, "maximum": 100},
            "green_bp": _BASIS_POINTS,
            "mirror": {"type": "number", "minimum": 0, "maximum": 100},
            "live": _COLOUR,
            "updated_at": {"type": "string", "format": "date-time"},
            "updated_by": {"type": "string"},
            "salt_changed": {"type": "boolean"},
        },
    },
    "WeightsRequest": {
        "type": "object",
        "required": ["green"],
        "additionalProperties": False,
        "properties": {
            "green": _PERCENT,
            "mirror": {
                "oneOf": [_PERCENT, {"type": "null"}],
                "description": "Share of blue's GET/HEAD/OPTIONS copied to green; null keeps it.",
            },
            "reason": {
                "oneOf": [{**_TEXT, "minLength": 1}, {"type": "null"}],
                "description": "Recorded in the history.",
            },
            "force": {
                "type": "boolean",
                "description": "Set the weights even while a rollout's controller owns them "
                "(otherwise 409).",
            },
        },
    },
    "Replica": {
        "type": "object",
        "required": [
            "id",
            "applied_version",
            "host",
            "pid",
            "listen",
            "started_at",
            "extra",
            "heartbeat_at",
            "age_seconds",
            "alive",
            "stopped",
        ],
        "properties": {
            "id": {"type": "string"},
            "applied_version": _VERSION,
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "listen": {"type": "string"},
            "started_at": {"type": "string"},
            "extra": {"type": "object"},
            "heartbeat_at": {"type": "string"},
            "age_seconds": {"type": "number", "minimum": 0},
            "alive": {"type": "boolean"},
            "stopped": {"type": "boolean"},
        },
    },
    "WaitOutcome": {
        "type": "object",
        "description": "Present when ?wait was given: which live replicas applied the write.",
        "required": ["all_applied", "waited_seconds", "replicas", "behind"],
        "properties": {
            "all_applied": {"type": "boolean"},
            "waited_seconds": {"type": "number", "minimum": 0},
            "replicas": {"type": "array", "items": _ref("Replica")},
            "behind": {"type": "array", "items": {"type": "string"}},
        },
    },
    "WeightsResult": {
        "type": "object",
        "required": ["changed", "weights"],
        "properties": {
            "changed": {
                "type": "boolean",
                "description": "False when the weights already were so.",
            },
            "weights": _ref("Weights"),
            "applied": _ref("WaitOutcome"),
        },
    },
    "Flag": {
        "type": "object",
        "required": ["name", "percent", "percent_bp", "allow", "colour", "salt", "description"],
        "properties": {
            "name": {"type": "string", "pattern": FLAG_NAME_PATTERN},
            "percent": {"type": "number", "minimum": 0, "maximum": 100},
            "percent_bp": _BASIS_POINTS,
            "allow": {"type": "array", "items": {"type": "string"}},
            "colour": {"oneOf": [_COLOUR, {"type": "null"}]},
            "salt": {"type": "string"},
            "description": {"type": "string"},
        },
    },
    "FlagRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": "The whole flag (PUT replaces it); missing fields take their defaults.",
        "properties": {
            "percent": {**_PERCENT, "description": "Share of sticky keys that get the flag."},
            "allow": {
                "oneOf": [
                    {
                        "type": "array",
                        "maxItems": MAX_API_ALLOW,
                        "uniqueItems": True,
                        "items": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_KEY_CHARS,
                            "pattern": _NO_CONTROL,
                        },
                    },
                    {"type": "null"},
                ],
                "description": "Keys (user ids, emails) that always get the flag.",
            },
            "colour": {
                "oneOf": [_COLOUR, {"type": "null"}],
                "description": "Only requests routed to this colour get the flag; null: both.",
            },
            "description": {"oneOf": [_TEXT, {"type": "null"}]},
            "salt": {
                "oneOf": [{"type": "string", "pattern": SALT_PATTERN}, {"type": "null"}],
                "description": "Hash salt (printable ASCII); empty: flag:<name>.",
            },
        },
    },
    "FlagList": {
        "type": "object",
        "required": ["version", "flags"],
        "properties": {"version": _VERSION, "flags": {"type": "array", "items": _ref("Flag")}},
    },
    "FlagResult": {
        "type": "object",
        "required": ["changed", "created", "version", "flag"],
        "properties": {
            "changed": {"type": "boolean"},
            "created": {"type": "boolean"},
            "version": _VERSION,
            "flag": _ref("Flag"),
            "applied": _ref("WaitOutcome"),
        },
    },
    "FlagDeleted": {
        "type": "object",
        "required": ["deleted", "version"],
        "properties": {
            "deleted": {"type": "string"},
            "version": _VERSION,
            "applied": _ref("WaitOutcome"),
        },
    },
    "Evaluation": {
        "type": "object",
        "required": ["version", "key", "colour", "flags", "header"],
        "properties": {
            "version": _VERSION,
            "key": {"type": ["string", "null"]},
            "colour": {"oneOf": [_COLOUR, {"type": "null"}]},
            "flags": {"type": "array", "items": {"type": "string"}},
            "header": {
                "type": ["string", "null"],
                "description": "The header line the proxy would add, or null when no flag is on.",
            },
        },
    },
    "ReplicaList": {
        "type": "object",
        "required": ["version", "replicas", "live", "up_to_date", "all_applied", "summary"],
        "properties": {
            "version": _VERSION,
            "replicas": {"type": "array", "items": _ref("Replica")},
            "live": {"type": "integer", "minimum": 0},
            "up_to_date": {"type": "integer", "minimum": 0},
            "all_applied": {"type": "boolean"},
            "summary": {"type": "string", "examples": ["all 3 live replicas run version 42"]},
        },
    },
    "ColourStats": {
        "type": "object",
        "required": [
            "requests_total",
            "requests",
            "rate_per_second",
            "errors_5xx",
            "error_ratio",
            "p50_seconds",
            "p99_seconds",
            "slower_than_last_bucket",
            "in_flight",
            "connect_errors",
            "timeouts",
        ],
        "properties": {
            "requests_total": {"type": "integer", "minimum": 0},
            "requests": {"type": "integer", "minimum": 0},
            "rate_per_second": {"type": "number", "minimum": 0},
            "errors_5xx": {"type": "integer", "minimum": 0},
            "error_ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "p50_seconds": {"type": ["number", "null"]},
            "p99_seconds": {
                "type": ["number", "null"],
                "description": "Upper bound of the histogram bucket; null without requests "
                "or when slower than the last bucket.",
            },
            "slower_than_last_bucket": {"type": "integer", "minimum": 0},
            "in_flight": {"type": "integer", "minimum": 0},
            "connect_errors": {"type": "integer", "minimum": 0},
            "timeouts": {"type": "integer", "minimum": 0},
        },
    },
    "Stats": {
        "type": "object",
        "required": ["window_seconds", "colours", "duration_buckets", "replica"],
        "properties": {
            "window_seconds": {"type": "number", "minimum": 0},
            "colours": {
                "type": "object",
                "required": ["blue", "green"],
                "properties": {"blue": _ref("ColourStats"), "green": _ref("ColourStats")},
            },
            "duration_buckets": {"type": "array", "items": {"type": "number"}},
            "replica": {"type": ["string", "null"]},
        },
    },
}

_IF_MATCH: Final = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'Write only if the state is at this version (42 or "42"; * = any). '
    "409 when it moved.",
    "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
}
_WAIT: Final = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "Wait up to this long (5s, 500ms, 1m; at most 300s) for every live replica "
    "to apply the write: 200 when all did, 202 with who is behind when not.",
    "schema": {"type": "string", "pattern": WAIT_PATTERN},
}
_FLAG_NAME: Final = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {
        "type": "string",
        "pattern": FLAG_NAME_PATTERN,
        "not": {"const": "evaluate"},
        "description": "Letters, digits, '_', '.', '-'; 'evaluate' is reserved.",
    },
}
_ETAG_HEADER: Final = {
    "ETag": {"description": 'The state version, quoted ("42").', "schema": {"type": "string"}}
}


def _write_responses(
    result: str, *, created: bool = False, missing: bool = False
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "Written (or already so); with ?wait, every live replica applied it.",
            "headers": _ETAG_HEADER,
            "content": _json_content(_ref(result)),
        },
        "202": {
            "description": "Written, but not every live replica applied it within ?wait.",
            "headers": _ETAG_HEADER,
            "content": _json_content(_ref(result)),
        },
        "400": _error("The body is not JSON."),
        "409": _error("If-Match names another version than the stored one."),
        "415": _error("The body is not application/json."),
        "422": _error("A field, parameter or header is invalid; `field` names it."),
    }
    if created:
        responses["201"] = {
            "description": "Created.",
            "headers": _ETAG_HEADER,
            "content": _json_content(_ref(result)),
        }
    if missing:
        responses["404"] = _error("No such flag.")
    return responses


OPERATIONS: Final[dict[str, dict[str, Any]]] = {
    "healthz": {
        "summary": "Liveness: the process answers.",
        "tags": ["probes"],
        "responses": {"200": {"description": "Alive.", "content": _json_content(_ref("Health"))}},
    },
    "readyz": {
        "summary": "Readiness: proxy listening, state loaded, a colour with a reachable server.",
        "tags": ["probes"],
        "responses": {
            "200": {"description": "Ready.", "content": _json_content(_ref("Ready"))},
            "503": {"description": "Not ready.", "content": _json_content(_ref("Ready"))},
        },
    },
    "metrics": {
        "summary": "Prometheus metrics (text format 0.0.4).",
        "tags": ["probes"],
        "responses": {
            "200": {
                "description": "Proxy, control-plane and migration metrics.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    },
    "openapi": {
        "summary": "This document.",
        "tags": ["meta"],
        "responses": {
            "200": {"description": "OpenAPI 3.1.", "content": _json_content({"type": "object"})}
        },
    },
    "getState": {
        "summary": "The whole shared state document.",
        "tags": ["state"],
        "responses": {
            "200": {
                "description": "The document; ETag is its version.",
                "headers": _ETAG_HEADER,
                "content": _json_content(_ref("State")),
            }
        },
    },
    "getWeights": {
        "summary": "Green's and blue's share of traffic.",
        "tags": ["weights"],
        "responses": {
            "200": {
                "description": "The weights.",
                "headers": _ETAG_HEADER,
                "content": _json_content(_ref("Weights")),
            }
        },
    },
    "putWeights": {
        "summary": "Set green's share of traffic (percent).",
        "tags": ["weights"],
        "parameters": [_IF_MATCH, _WAIT],
        "requestBody": {"required": True, "content": _json_content(_ref("WeightsRequest"))},
        "responses": _write_responses("WeightsResult"),
    },
    "listFlags": {
        "summary": "Every feature flag.",
        "tags": ["flags"],
        "responses": {
            "200": {
                "description": "Flags sorted by name.",
                "headers": _ETAG_HEADER,
                "content": _json_content(_ref("FlagList")),
            }
        },
    },
    "evaluateFlags": {
        "summary": "Which flags are on for a sticky key, as the proxy would send them.",
        "tags": ["flags"],
        "parameters": [
            {
                "name": "key",
                "in": "query",
                "required": False,
                "description": "The request's sticky key (user id); absent: a request without one.",
                "schema": {"type": "string", "maxLength": 1024},
            },
            {
                "name": "colour",
                "in": "query",
                "required": False,
                "description": "The colour the request goes to; absent: either.",
                "schema": _COLOUR,
            },
        ],
        "responses": {
            "200": {"description": "The flags on.", "content": _json_content(_ref("Evaluation"))},
            "422": _error("A parameter is invalid."),
        },
    },
    "getFlag": {
        "summary": "One feature flag.",
        "tags": ["flags"],
        "parameters": [_FLAG_NAME],
        "responses": {
            "200": {
                "description": "The flag.",
                "headers": _ETAG_HEADER,
                "content": _json_content(_ref("Flag")),
            },
            "404": _error("No such flag."),
            "422": _error("The name is invalid."),
        },
    },
    "putFlag": {
        "summary": "Create or replace a feature flag.",
        "tags": ["flags"],
        "parameters": [_FLAG_NAME, _IF_MATCH, _WAIT],
        "requestBody": {"required": True, "content": _json_content(_ref("FlagRequest"))},
        "responses": _write_responses("FlagResult", created=True),
    },
    "deleteFlag": {
        "summary": "Delete a feature flag.",
        "tags": ["flags"],
        "parameters": [_FLAG_NAME, _IF_MATCH, _WAIT],
        "responses": {
            key: value
            for key, value in _write_responses("FlagDeleted", missing=True).items()
            if key not in ("400", "415")
        },
    },
    "listReplicas": {
        "summary": "Proxy replicas, their heartbeats and the state version each applied.",
        "tags": ["replicas"],
        "responses": {
            "200": {"description": "Replicas.", "content": _json_content(_ref("ReplicaList"))}
        },
    },
    "getStats": {
        "summary": "This replica's traffic per colour over a recent window.",
        "tags": ["stats"],
        "parameters": [
            {
                "name": "window",
                "in": "query",
                "required": False,
                "description": "How far back (default 10s, at most 60s).",
                "schema": {"type": "string", "pattern": WINDOW_PATTERN},
            }
        ],
        "responses": {
            "200": {"description": "Numbers per colour.", "content": _json_content(_ref("Stats"))},
            "404": _error("No proxy runs in this process."),
            "422": _error("A parameter is invalid."),
        },
    },
    "events": {
        "summary": "Server-sent events: one per state change.",
        "description": (
            "Each event has `id` = state version and `event` = the history kind "
            "(`weights_changed`, `flag_set`, `flag_deleted`, `rollout_phase`, ...; "
            "`state_changed` when several versions coalesce). `data` is JSON with "
            "`version`, `kind`, `changes` (the new weights, flags set/deleted, rollout) "
            "and `history`. A new client first gets a `snapshot` event with the whole "
            "document; a client reconnecting with Last-Event-ID gets the missed history "
            "entries (`replayed: true`) when the document still holds them. A comment "
            "line is sent every 15 s to keep the connection open."
        ),
        "tags": ["events"],
        "parameters": [
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": EVENT_ID_PATTERN},
            },
            {
                "name": "last_event_id",
                "in": "query",
                "required": False,
                "description": "Same as the Last-Event-ID header (for clients that cannot set it).",
                "schema": {"type": "string", "pattern": EVENT_ID_PATTERN},
            },
        ],
        "responses": {
            "200": {
                "description": "The stream.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "422": _error("Last-Event-ID is not a version."),
            "429": _error("Too many event streams are open."),
        },
    },
}

_SECURED_RESPONSES: Final = {
    "401": {
        "description": "Missing or wrong bearer token.",
        "headers": {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer challenge."}
        },
        "content": _json_content(_ref("Error")),
    },
    "403": _error("No token is configured and the request came from a browser (Origin)."),
    "413": _error("The body is larger than admin.max_body_bytes."),
}


def build_document(
    routes: Sequence[Route],
    *,
    operations: Mapping[str, Mapping[str, Any]] | None = None,
    schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes``.

    A route's own ``operation`` wins over :data:`OPERATIONS`; ``operations``
    and ``schemas`` add (or override) entries for route modules. Raises
    ``KeyError`` naming a route whose operation is missing.
    """
    known = {**OPERATIONS, **(operations or {})}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.operation is not None:
            known[route.operation_id] = route.operation
        if route.operation_id not in known:
            raise KeyError(
                f"route {route.method} {route.path}: no OpenAPI operation "
                f"{route.operation_id!r}; add it to OPERATIONS or pass it in operations"
            )
        operation = copy.deepcopy(dict(known[route.operation_id]))
        operation["operationId"] = route.operation_id
        if route.mutating:
            operation["security"] = [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            for status, response in _SECURED_RESPONSES.items():
                responses.setdefault(status, copy.deepcopy(response))
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bluegreen admin API",
            "version": __version__,
            "description": (
                "Control plane of the bluegreen proxy: weights, feature flags, replicas, "
                "events, metrics. Mutating operations need `Authorization: Bearer <token>` "
                "(admin.token or BLUEGREEN_ADMIN_TOKEN); without a configured token they "
                "are allowed on a loopback listener only, and never from a browser."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {**copy.deepcopy(SCHEMAS), **copy.deepcopy(dict(schemas or {}))},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
