"""The admin HTTP API: health, metrics, state, weights, flags, replicas, stats and events.

Theory of operation
-------------------
Every route is declared once, in a :class:`Route` table (:data:`ROUTES`),
with its method, path, handler, OpenAPI operation id and whether it
mutates. Everything that must hold for *every* route is derived from that
table, so a route added later (the rollout endpoints live in their own
module and are passed to :func:`create_app` as ``extra_routes``) cannot
forget it:

* **auth** — a mutating route is wrapped by :func:`_guard`: with a token
  configured it needs ``Authorization: Bearer <token>`` (compared in constant
  time, 401 with ``WWW-Authenticate: Bearer`` otherwise); without one (only
  allowed on a loopback listener) it refuses requests that carry an
  ``Origin`` header, which every browser sends on a cross-site or non-GET
  request, so a web page cannot drive the API through the operator's browser;
* **the OpenAPI document** — built from the same table by
  :func:`bluegreen.admin_openapi.build_document`; a test checks that each
  route has an operation and each operation a route.

Input never reaches the store unchecked. Bodies are bounded
(``client_max_size``), must be ``application/json`` (415), must parse (400)
and must be an object with only known fields of the right types and ranges
(422 with ``{"error": ..., "field": ...}``). Errors of any kind, including
aiohttp's own 404/405/413, are answered as JSON by one middleware; an
unexpected exception is logged and answered 500, and the fuzz test holds that
no input produces one.

Writes are compare-and-set on the state store. ``If-Match: <version>`` makes
the write conditional (409 with the current version when it moved);
``?wait=5s`` then waits until every live replica has applied the new version
and answers 200 with the replica list, or **202** with the replicas that are
behind when the wait ran out: the write did commit, so a 5xx (which invites
a blind retry) would be wrong; 202 means "accepted, not yet in effect
everywhere", and the CLI turns it into exit code 1.

The event stream (``/api/v1/events``) subscribes to the store: each new
version becomes one server-sent event (``id`` = version, ``event`` = the
history kind) carrying the changed parts. A slow reader never makes memory
grow: versions it has not read yet coalesce into one ``state_changed``
event. ``Last-Event-ID`` replays what the document's history still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from bluegreen import __version__
from bluegreen.admin_openapi import (
    EVENT_ID_PATTERN,
    IF_MATCH_PATTERN,
    MAX_API_ALLOW,
    SALT_PATTERN,
    WAIT_PATTERN,
    WINDOW_PATTERN,
    build_document,
)
from bluegreen.errors import InvalidFieldError, StateConflictError, StateError
from bluegreen.flags import FLAGS_HEADER, enabled_flags
from bluegreen.metrics import DURATION_BUCKETS, ColourSnapshot, StatsSnapshot
from bluegreen.routing import BASIS_POINTS, Colour, bp_to_percent, percent_to_bp
from bluegreen.runtime import data_plane_build
from bluegreen.state.model import (
    MAX_TEXT_CHARS,
    Flag,
    HistoryEntry,
    StateDocument,
    check_flag_name,
    check_text,
    document_to_dict,
    flag_to_dict,
    history_entry_to_dict,
    json_type_name,
    replica_status_to_dict,
    with_flag,
    with_weights,
    without_flag,
)
from bluegreen.state.store import StateStore

log = structlog.get_logger("bluegreen.admin")

API: Final = "/api/v1"
# Room for a flag with thousands of allow-listed keys; bodies are read into memory.
DEFAULT_MAX_BODY: Final = 1024 * 1024
DEFAULT_EVENT_HEARTBEAT: Final = 15.0
DEFAULT_MAX_EVENT_STREAMS: Final = 64
MAX_WAIT_SECONDS: Final = 300.0
MAX_STATS_WINDOW: Final = 60.0
DEFAULT_STATS_WINDOW: Final = 10.0
MAX_EVALUATE_KEY: Final = 1024
# Request line limit: a 1024-character key percent-encoded as 4-byte UTF-8 fits.
MAX_REQUEST_LINE: Final = 16 * 1024
# A flag named like this would be shadowed by GET /api/v1/flags/evaluate.
RESERVED_FLAG_NAMES: Final = frozenset({"evaluate"})
MIN_TOKEN_CHARS: Final = 16

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- wiring values


@dataclass(frozen=True, slots=True)
class Route:
    """One admin API route; auth and the OpenAPI document are derived from it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    mutating: bool = False
    # The OpenAPI operation object; None: looked up in admin_openapi.OPERATIONS.
    operation: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ServerHealth:
    """Whether one upstream server is reachable now (``detail`` says why not)."""

    colour: Colour
    server: str
    up: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """Limits and the bearer token of the admin API (``token=None``: no auth, loopback only)."""

    token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    event_heartbeat: float = DEFAULT_EVENT_HEARTBEAT
    max_event_streams: int = DEFAULT_MAX_EVENT_STREAMS
    stats_interval: float = 1.0


@dataclass
class AdminContext:
    """What the handlers need: the store and read-only views of the local proxy.

    ``stats`` returns the local proxy's cumulative counters, ``upstreams``
    the reachability of its servers, ``serving`` whether the proxy accepts
    traffic (False while draining). Any of them may be None for an admin API
    without a proxy.
    """

    store: StateStore
    actor: str
    settings: AdminSettings = field(default_factory=AdminSettings)
    registries: Sequence[CollectorRegistry] = ()
    stats: Callable[[], StatsSnapshot] | None = None
    upstreams: Callable[[], Sequence[ServerHealth]] | None = None
    serving: Callable[[], bool] | None = None
    replica_id: str | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    event_streams: int = 0
    samples: deque[StatsSnapshot] = field(default_factory=lambda: deque(maxlen=64))


CONTEXT: Final = web.AppKey("bluegreen_admin", AdminContext)
_OPENAPI_KEY: Final = web.AppKey("bluegreen_admin_openapi", dict)
_ROUTES_KEY: Final[web.AppKey[tuple[Route, ...]]] = web.AppKey("bluegreen_admin_routes")


def context(request: web.Request) -> AdminContext:
    """The :class:`AdminContext` of the app serving ``request`` (for route modules)."""
    return request.app[CONTEXT]


# --------------------------------------------------------------------------- responses


def json_response(
    data: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response (compact, UTF-8)."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return web.Response(text=body, status=status, content_type="application/json", headers=headers)


def error_response(
    status: int,
    message: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: object,
) -> web.Response:
    """The JSON error every failing request gets: ``{"error", "status", "field"?, ...}``."""
    body: dict[str, object] = {"error": message, "status": status}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return json_response(body, status=status, headers=headers)


class ApiError(Exception):
    """Raised by handlers and helpers to answer with a JSON error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers
        self.extra = extra

    def response(self) -> web.Response:
        """The JSON error response."""
        return error_response(
            self.status, self.message, field=self.field, headers=self.headers, **self.extra
        )


_HTTP_MESSAGES: Final = {
    404: "no such route; the API is described at /api/v1/openapi.json",
    405: "method not allowed on this route; see the Allow header",
    413: "request body too large",
}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except InvalidFieldError as exc:
        return error_response(422, exc.problem, field=exc.field)
    except StateConflictError as exc:
        return _conflict(exc.expected, exc.found)
    except StateError as exc:
        log.warning("admin_state_unavailable", path=request.path, error=str(exc))
        return error_response(503, f"state store unavailable: {exc}", headers={"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {}
        if exc.status == 405:
            routes = request.app[_ROUTES_KEY]
            headers["Allow"] = ",".join(_allowed_methods(routes, request.path))
        message = _HTTP_MESSAGES.get(exc.status, exc.reason)
        if exc.status == 413:
            limit = request.app[CONTEXT].settings.max_body_bytes
            message = f"request body larger than {limit} bytes"
        if exc.status == 404:
            message = f"no route {request.method} {request.path}; see /api/v1/openapi.json"
        return error_response(exc.status, message, headers=headers)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("admin_request_failed", method=request.method, path=request.path)
        return error_response(500, "internal error; the server log has the details")


def _allowed_methods(routes: Sequence[Route], path: str) -> list[str]:
    """Methods of the routes for ``path``; a literal path hides templates (like the router)."""
    exact = sorted({r.method for r in routes if r.path == path})
    if exact:
        return exact
    return sorted(
        {
            r.method
            for r in routes
            if "{" in r.path
            and re.fullmatch(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(r.path)), path)
        }
    )


def _conflict(expected: int, found: int) -> web.Response:
    return error_response(
        409,
        f"state is at version {found}, not {expected}; re-read it and retry",
        field="If-Match",
        expected_version=expected,
        current_version=found,
    )


# --------------------------------------------------------------------------- auth


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant time)."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Hash both sides so the comparison takes the same time whatever the lengths.
    given = hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()
    wanted = hashlib.sha256(token.encode("utf-8")).digest()
    return hmac.compare_digest(given, wanted)


def _guard(handler: Handler) -> Handler:
    """Wrap a mutating handler with the bearer-token (or no-browser) check."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        token = request.app[CONTEXT].settings.token
        if token is not None:
            header = request.headers.get("Authorization")
            if not token_matches(header, token):
                challenge = 'Bearer realm="bluegreen"'
                if header:
                    challenge += ', error="invalid_token"'
                raise ApiError(
                    401,
                    "missing or wrong bearer token; send Authorization: Bearer <admin.token>",
                    headers={"WWW-Authenticate": challenge},
                )
        elif "Origin" in request.headers:
            raise ApiError(
                403,
                "no admin.token is configured, so requests from browsers (with an Origin "
                "header) may not change anything; set admin.token or BLUEGREEN_ADMIN_TOKEN",
            )
        return await handler(request)

    return guarded


# --------------------------------------------------------------------------- input


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


async def read_json_object(
    request: web.Request, *, allowed: Iterable[str], required: Iterable[str] = ()
) -> dict[str, Any]:
    """The request body as a JSON object with only ``allowed`` keys and all ``required`` ones.

    415 unless the body is ``application/json``; 400 when it does not parse;
    422 naming the field for a non-object, an unknown or a missing field.
    """
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise ApiError(
            415,
            f"expected Content-Type: application/json, got {request.content_type!r}",
            field="Content-Type",
        )
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "expected a JSON object in the body, got nothing")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"body is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ApiError(422, f"expected a JSON object, got {json_type_name(obj)}", field="body")
    allowed_set = set(allowed)
    for key in obj:
        if key not in allowed_set:
            known = ", ".join(sorted(allowed_set))
            raise ApiError(422, f"unknown field; known fields: {known}", field=key)
    for key in required:
        if key not in obj:
            raise ApiError(422, "missing", field=key)
    return obj


def query_params(request: web.Request, allowed: Iterable[str]) -> dict[str, str]:
    """The query string as a dict; 422 for unknown or repeated parameters."""
    allowed_set = set(allowed)
    params: dict[str, str] = {}
    for key, value in request.query.items():
        if key not in allowed_set:
            known = ", ".join(sorted(allowed_set)) or "none"
            raise ApiError(422, f"unknown query parameter; known: {known}", field=key)
        if key in params:
            raise ApiError(422, "given more than once", field=key)
        params[key] = value
    return params


_DURATION: Final = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,6})?)(ms|s|m)?")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_WAIT: Final = re.compile(WAIT_PATTERN)
_WINDOW: Final = re.compile(WINDOW_PATTERN)


def duration_seconds(pattern: re.Pattern[str], text: str) -> float | None:
    """Seconds if all of ``text`` matches ``pattern`` (a number group, an ms/s/m/h group)."""
    match = pattern.fullmatch(text)
    return None if match is None else float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_wait(text: str, *, field: str = "wait", window: bool = False) -> float:
    """Seconds from ``5s``, ``500ms``, ``1m`` or plain seconds (0..300 s; windows 0..60 s)."""
    maximum = MAX_STATS_WINDOW if window else MAX_WAIT_SECONDS
    seconds = duration_seconds(_DURATION, text)
    if seconds is None:
        raise InvalidFieldError(field, f'expected a duration like "5s" or "500ms", got {text!r}')
    # The pattern (shared with the OpenAPI document) also bounds the range.
    if seconds > maximum or (_WINDOW if window else _WAIT).fullmatch(text) is None:
        raise InvalidFieldError(field, f"{text} is out of range; use at most {maximum:g}s")
    return seconds


_IF_MATCH: Final = re.compile(IF_MATCH_PATTERN)


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` header requires (``None``: absent or ``*``)."""
    if value is None:
        return None
    text = value.strip()
    if text == "*":
        return None
    if _IF_MATCH.fullmatch(text) is None:
        raise InvalidFieldError(
            "If-Match", f'expected a state version like 42 or "42", got {value!r}'
        )
    return int(text.strip('"'))


def parse_percent(value: object, field: str) -> int:
    """Basis points from a JSON percentage (0..100 in 0.01 steps)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFieldError(
            field, f"expected a number 0..100 (percent), got {json_type_name(value)}"
        )
    try:
        return percent_to_bp(value)
    except (ValueError, OverflowError) as exc:
        raise InvalidFieldError(field, str(exc)) from None


def _optional_text(obj: Mapping[str, Any], key: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    return check_text(value, key, max_chars=max_chars, empty_ok=True)


def _colour(value: object, field: str) -> Colour | None:
    if value is None:
        return None
    if value in ("blue", "green"):
        return Colour(str(value))
    raise InvalidFieldError(field, f'expected "blue", "green" or null, got {value!r}')


# --------------------------------------------------------------------------- representations


def weights_to_dict(doc: StateDocument) -> dict[str, Any]:
    """The API form of the weights of ``doc``."""
    return {
        "version": doc.version,
        "green": bp_to_percent(doc.green_weight_bp),
        "blue": bp_to_percent(BASIS_POINTS - doc.green_weight_bp),
        "green_bp": doc.green_weight_bp,
        "mirror": bp_to_percent(doc.mirror_bp),
        "live": str(doc.live),
        "updated_at": doc.updated_at,
        "updated_by": doc.updated_by,
    }


def flag_json(flag: Flag) -> dict[str, Any]:
    """The API form of a flag: the stored form plus ``percent``."""
    data = flag_to_dict(flag)
    data["percent"] = bp_to_percent(flag.percent_bp)
    return data


def _etag(doc: StateDocument) -> dict[str, str]:
    return {"ETag": f'"{doc.version}"'}


# --------------------------------------------------------------------------- writes


async def write_state(
    ctx: AdminContext, change: Callable[[StateDocument], StateDocument], expected: int | None
) -> tuple[StateDocument, bool]:
    """Apply ``change`` with compare-and-set; returns (document, whether it wrote).

    With ``expected`` (from ``If-Match``) the write happens only on that
    version; otherwise conflicts are retried by the store.
    """
    store = ctx.store
    if expected is None:
        wrote = [False]

        def tracked(doc: StateDocument) -> StateDocument:
            new = change(doc)
            wrote[0] = new is not doc
            return new

        doc = await store.update(tracked)
        return doc, wrote[0]
    current = await store.read()
    if current.version != expected:
        raise StateConflictError(expected, current.version)
    new = change(current)
    if new is current:
        return current, False
    return await store.compare_and_set(expected, new), True


async def wait_result(ctx: AdminContext, version: int, seconds: float) -> dict[str, Any]:
    """Wait up to ``seconds`` for every live replica to apply ``version``; describe who did."""
    applied = await ctx.store.wait_applied(version, seconds)
    statuses = [s for s in await ctx.store.replicas() if s.alive]
    behind = [s.info.id for s in statuses if s.info.applied_version < version]
    if not statuses:
        applied = False
    return {
        "all_applied": applied and not behind,
        "waited_seconds": seconds,
        "replicas": [replica_status_to_dict(s) for s in statuses],
        "behind": behind,
    }


def _write_conditions(request: web.Request) -> tuple[dict[str, str], int | None]:
    """A state write's ``?wait`` (checked before anything is written) and ``If-Match``."""
    params = query_params(request, ("wait",))
    if "wait" in params:
        parse_wait(params["wait"])
    return params, parse_if_match(request.headers.get("If-Match"))


async def _answer_write(
    ctx: AdminContext,
    request: web.Request,
    params: Mapping[str, str],
    doc: StateDocument,
    body: dict[str, Any],
    *,
    status: int = 200,
) -> web.Response:
    """Attach the optional ``?wait`` outcome to a write's answer (202 if not applied)."""
    if "wait" in params:
        outcome = await wait_result(ctx, doc.version, parse_wait(params["wait"]))
        body["applied"] = outcome
        if not outcome["all_applied"]:
            status = 202
    return json_response(body, status=status, headers=_etag(doc))


# --------------------------------------------------------------------------- handlers: probes


async def healthz(request: web.Request) -> web.StreamResponse:
    """Alive: the process answers."""
    query_params(request, ())
    return json_response({"status": "ok", "version": __version__, "data_plane": data_plane_build()})


def readiness(ctx: AdminContext) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Whether this replica should get traffic, with one entry per check."""
    checks: dict[str, dict[str, Any]] = {}
    serving = ctx.serving() if ctx.serving is not None else True
    checks["proxy"] = {"ok": serving, "detail": "accepting" if serving else "draining or stopped"}
    try:
        version = ctx.store.current.version
        checks["state"] = {"ok": True, "detail": f"version {version} loaded"}
    except StateError as exc:
        checks["state"] = {"ok": False, "detail": str(exc)}
    if ctx.upstreams is not None:
        servers = ctx.upstreams()
        healthy = sorted({s.colour.value for s in servers if s.up})
        down = [f"{s.colour.value} {s.server}: {s.detail or 'down'}" for s in servers if not s.up]
        detail = f"healthy: {', '.join(healthy) or 'none'}"
        if down:
            detail += f"; down: {'; '.join(down)}"
        checks["upstreams"] = {"ok": bool(healthy), "detail": detail}
    return all(c["ok"] for c in checks.values()), checks


async def readyz(request: web.Request) -> web.StreamResponse:
    """Ready: listening, state loaded, at least one colour with a reachable server."""
    query_params(request, ())
    ready, checks = readiness(context(request))
    return json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text: the proxy's registry, migrations, control plane."""
    query_params(request, ())
    body = b"".join(generate_latest(registry) for registry in context(request).registries)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def openapi(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 document of every route of this app."""
    query_params(request, ())
    return json_response(request.app[_OPENAPI_KEY])


# --------------------------------------------------------------------------- handlers: state


async def get_state(request: web.Request) -> web.StreamResponse:
    """The whole state document."""
    query_params(request, ())
    doc = context(request).store.current
    return json_response(document_to_dict(doc), headers=_etag(doc))


async def get_weights(request: web.Request) -> web.StreamResponse:
    """Green's and blue's share now."""
    query_params(request, ())
    doc = context(request).store.current
    return json_response(weights_to_dict(doc), headers=_etag(doc))


WEIGHT_FIELDS: Final = ("green", "mirror", "reason", "force")
# While a rollout is in one of these phases its controller owns the weights.
CONTROLLER_OWNS_WEIGHTS: Final = frozenset(
    {"preflight", "migrating", "smoke", "ramp", "bake", "rolling_back"}
)


async def put_weights(request: web.Request) -> web.StreamResponse:
    """Set green's share (percent); optional ``If-Match`` and ``?wait``."""
    ctx = context(request)
    params, expected = _write_conditions(request)
    body = await read_json_object(request, allowed=WEIGHT_FIELDS, required=("green",))
    green_bp = parse_percent(body["green"], "green")
    mirror_bp = parse_percent(body["mirror"], "mirror") if body.get("mirror") is not None else None
    reason = body.get("reason")
    if reason is not None:
        reason = check_text(reason, "reason")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(422, f"expected true or false, got {force!r}", field="force")
    now = ctx.clock()

    def change(doc: StateDocument) -> StateDocument:
        phase = (doc.rollout or {}).get("phase")
        if phase in CONTROLLER_OWNS_WEIGHTS and not force:
            raise ApiError(
                409,
                f'rollout phase is "{phase}": its controller sets the weights. '
                "Pause or abort it (bluegreen rollout pause|abort), or send "
                '"force": true to override it anyway',
                field="green",
            )
        return with_weights(doc, green_bp, ctx.actor, now, mirror_bp=mirror_bp, reason=reason)

    doc, wrote = await write_state(ctx, change, expected)
    if wrote:
        log.info(
            "weights_changed",
            version=doc.version,
            green_percent=bp_to_percent(doc.green_weight_bp),
            actor=ctx.actor,
            remote=request.remote,
        )
    result = {"changed": wrote, "weights": weights_to_dict(doc)}
    return await _answer_write(ctx, request, params, doc, result)


# --------------------------------------------------------------------------- handlers: flags

FLAG_FIELDS: Final = ("percent", "allow", "colour", "description", "salt")


def _flag_name(request: web.Request) -> str:
    name = request.match_info["name"]
    check_flag_name(name, "name")
    return name


async def list_flags(request: web.Request) -> web.StreamResponse:
    """Every flag, sorted by name."""
    query_params(request, ())
    doc = context(request).store.current
    flags = [flag_json(f) for f in doc.flags.values()]
    return json_response({"version": doc.version, "flags": flags}, headers=_etag(doc))


async def get_flag(request: web.Request) -> web.StreamResponse:
    """One flag, or 404."""
    query_params(request, ())
    name = _flag_name(request)
    doc = context(request).store.current
    flag = doc.flags.get(name)
    if flag is None:
        raise ApiError(404, f"no flag named {name!r}", field="name")
    return json_response(flag_json(flag), headers=_etag(doc))


def flag_from_body(name: str, body: Mapping[str, Any]) -> Flag:
    """A :class:`Flag` from a PUT body (missing fields take their defaults)."""
    percent = body.get("percent", 0)
    percent_bp = parse_percent(percent, "percent")
    allow = body.get("allow", [])
    if allow is None:
        allow = []
    if not isinstance(allow, list):
        raise InvalidFieldError("allow", f"expected an array of keys, got {json_type_name(allow)}")
    if len(allow) > MAX_API_ALLOW:
        raise InvalidFieldError(
            "allow", f"{len(allow)} keys; at most {MAX_API_ALLOW} (use percent for more)"
        )
    for i, key in enumerate(allow):
        if not isinstance(key, str):
            raise InvalidFieldError(f"allow[{i}]", f"expected a string, got {json_type_name(key)}")
    salt = body.get("salt")
    if salt is None:
        salt = ""
    if not isinstance(salt, str) or _SALT.fullmatch(salt) is None:
        raise InvalidFieldError("salt", "expected up to 64 printable ASCII characters")
    return Flag(
        name=name,
        percent_bp=percent_bp,
        allow=tuple(allow),
        colour=_colour(body.get("colour"), "colour"),
        salt=salt,
        description=_optional_text(body, "description"),
    )


_SALT: Final = re.compile(SALT_PATTERN)


def _writable_flag_name(request: web.Request) -> str:
    name = _flag_name(request)
    if name in RESERVED_FLAG_NAMES:
        # /flags/evaluate is a read-only resource of its own.
        raise ApiError(
            405,
            f"{request.path} is read-only; {name!r} is reserved and cannot name a flag",
            headers={"Allow": "GET"},
        )
    return name


async def put_flag(request: web.Request) -> web.StreamResponse:
    """Create or replace a flag (201 created, 200 replaced or unchanged)."""
    name = _writable_flag_name(request)
    ctx = context(request)
    params, expected = _write_conditions(request)
    body = await read_json_object(request, allowed=FLAG_FIELDS)
    flag = flag_from_body(name, body)
    now = ctx.clock()
    created = [False]

    def change(doc: StateDocument) -> StateDocument:
        created[0] = name not in doc.flags
        return with_flag(doc, flag, ctx.actor, now)

    doc, wrote = await write_state(ctx, change, expected)
    if wrote:
        log.info(
            "flag_set",
            flag=name,
            version=doc.version,
            percent=bp_to_percent(flag.percent_bp),
            remote=request.remote,
        )
    result = {
        "changed": wrote,
        "created": created[0],
        "version": doc.version,
        "flag": flag_json(flag),
    }
    status = 201 if created[0] else 200
    return await _answer_write(ctx, request, params, doc, result, status=status)


async def delete_flag(request: web.Request) -> web.StreamResponse:
    """Delete a flag (404 if there is none)."""
    name = _writable_flag_name(request)
    ctx = context(request)
    params, expected = _write_conditions(request)
    now = ctx.clock()
    try:
        doc, _ = await write_state(ctx, lambda d: without_flag(d, name, ctx.actor, now), expected)
    except KeyError:
        raise ApiError(404, f"no flag named {name!r}", field="name") from None
    log.info("flag_deleted", flag=name, version=doc.version, remote=request.remote)
    result = {"deleted": name, "version": doc.version}
    return await _answer_write(ctx, request, params, doc, result)


async def evaluate_flags(request: web.Request) -> web.StreamResponse:
    """Which flags are on for a sticky key (and colour), as the proxy would send them."""
    params = query_params(request, ("key", "colour"))
    key = params.get("key")
    if key is not None and len(key) > MAX_EVALUATE_KEY:
        raise InvalidFieldError("key", f"longer than {MAX_EVALUATE_KEY} characters")
    colour = _colour(params["colour"], "colour") if "colour" in params else None
    doc = context(request).store.current
    raw_key = None if key is None else key.encode("utf-8", "surrogateescape")
    names = enabled_flags(doc.flags.values(), raw_key, colour)
    return json_response(
        {
            "version": doc.version,
            "key": key,
            "colour": None if colour is None else colour.value,
            "flags": names,
            "header": f"{FLAGS_HEADER}: {','.join(names)}" if names else None,
        }
    )


# --------------------------------------------------------------------------- replicas, stats


def replicas_summary(version: int, live: int, current: int) -> str:
    """``all 3 live replicas run version 42`` or who is behind."""
    if live == 0:
        return "no live replica"
    noun = "replica" if live == 1 else "replicas"
    if current == live:
        return f"all {live} live {noun} run version {version}"
    return f"{current} of {live} live {noun} run version {version}"


async def get_replicas(request: web.Request) -> web.StreamResponse:
    """Every replica seen recently, its heartbeat and applied version."""
    query_params(request, ())
    ctx = context(request)
    version = ctx.store.current.version
    statuses = await ctx.store.replicas()
    live = [s for s in statuses if s.alive]
    current = sum(1 for s in live if s.info.applied_version >= version)
    return json_response(
        {
            "version": version,
            "replicas": [replica_status_to_dict(s) for s in statuses],
            "live": len(live),
            "up_to_date": current,
            "all_applied": bool(live) and current == len(live),
            "summary": replicas_summary(version, len(live), current),
        }
    )


def _quantile(window: ColourSnapshot, q: float) -> float | None:
    value = window.duration_quantile(q)
    if value is None or value == float("inf"):
        return None
    return value


def colour_stats(now: ColourSnapshot, window: ColourSnapshot, seconds: float) -> dict[str, Any]:
    """One colour's numbers over a window (rates per second, quantiles in seconds)."""
    requests = window.requests
    return {
        "requests_total": now.requests,
        "requests": requests,
        "rate_per_second": round(requests / seconds, 3) if seconds > 0 else 0.0,
        "errors_5xx": window.errors_5xx,
        "error_ratio": round(window.errors_5xx / requests, 6) if requests else 0.0,
        "p50_seconds": _quantile(window, 0.5),
        "p99_seconds": _quantile(window, 0.99),
        "slower_than_last_bucket": window.duration_counts[-1],
        "in_flight": now.in_flight,
        "connect_errors": window.connect_errors,
        "timeouts": window.timeouts,
    }


def stats_over(
    samples: Sequence[StatsSnapshot], now: StatsSnapshot, window: float
) -> dict[str, Any]:
    """The numbers of ``now`` against the oldest sample within ``window`` seconds."""
    base = now
    for sample in samples:
        if now.at - sample.at <= window + 1e-6:
            base = sample
            break
    seconds = now.at - base.at
    diff = now.since(base)
    return {
        "window_seconds": round(seconds, 3),
        "colours": {
            c.value: colour_stats(now.colour(c), diff.colour(c), seconds)
            for c in (Colour.BLUE, Colour.GREEN)
        },
        "duration_buckets": list(DURATION_BUCKETS),
    }


async def get_stats(request: web.Request) -> web.StreamResponse:
    """This replica's traffic per colour over a recent window (default 10 s)."""
    params = query_params(request, ("window",))
    window = DEFAULT_STATS_WINDOW
    if "window" in params:
        window = parse_wait(params["window"], field="window", window=True)
    ctx = context(request)
    if ctx.stats is None:
        raise ApiError(404, "no proxy runs in this process, so there are no traffic numbers")
    body = stats_over(ctx.samples, ctx.stats(), window)
    body["replica"] = ctx.replica_id
    return json_response(body)


async def _sample_stats(ctx: AdminContext) -> None:
    """Keep one stats snapshot per interval for ``/api/v1/stats`` windows."""
    assert ctx.stats is not None  # noqa: S101 - started only with a stats source
    while True:
        ctx.samples.append(ctx.stats())
        await asyncio.sleep(ctx.settings.stats_interval)


# --------------------------------------------------------------------------- handlers: events


def _weights_changed(old: StateDocument, new: StateDocument) -> bool:
    return (old.green_weight_bp, old.mirror_bp, old.salt, old.live) != (
        new.green_weight_bp,
        new.mirror_bp,
        new.salt,
        new.live,
    )


def state_changes(old: StateDocument, new: StateDocument) -> dict[str, Any]:
    """The parts of ``new`` that differ from ``old`` (weights, flags, rollout)."""
    changes: dict[str, Any] = {}
    if _weights_changed(old, new):
        weights = weights_to_dict(new)
        weights["salt_changed"] = old.salt != new.salt
        changes["weights"] = weights
    set_flags = {n: flag_json(f) for n, f in new.flags.items() if old.flags.get(n) != f}
    deleted = sorted(n for n in old.flags if n not in new.flags)
    if set_flags or deleted:
        changes["flags"] = {"set": set_flags, "deleted": deleted}
    if old.rollout != new.rollout:
        changes["rollout"] = None if new.rollout is None else dict(new.rollout)
    return changes


def _entries_after(doc: StateDocument, version: int) -> list[HistoryEntry]:
    return [e for e in doc.history if e.version > version]


def change_event(old: StateDocument, new: StateDocument) -> bytes:
    """The SSE frame for going from ``old`` to ``new`` (several versions coalesce)."""
    entries = _entries_after(new, old.version)
    kind = entries[0].kind if len(entries) == 1 else "state_changed"
    data = {
        "version": new.version,
        "previous_version": old.version,
        "kind": kind,
        "at": new.updated_at,
        "actor": new.updated_by,
        "changes": state_changes(old, new),
        "history": [history_entry_to_dict(e) for e in entries],
    }
    return sse_frame(kind, data, event_id=new.version)


def sse_frame(event: str, data: object, *, event_id: int | None = None) -> bytes:
    """One server-sent event (``data`` as one line of JSON)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def catch_up(doc: StateDocument, last_id: int | None) -> list[bytes]:
    """Frames a (re)connecting client needs before live events.

    No ``Last-Event-ID`` (or one the history no longer covers, or one from
    the future): a ``snapshot`` with the whole document. Otherwise each
    history entry after it, marked ``replayed``.
    """
    if last_id is not None and last_id == doc.version:
        return []
    if last_id is not None and last_id < doc.version:
        entries = _entries_after(doc, last_id)
        if entries and entries[0].version == last_id + 1:
            return [
                sse_frame(
                    e.kind,
                    {**history_entry_to_dict(e), "replayed": True},
                    event_id=e.version,
                )
                for e in entries
            ]
    return [sse_frame("snapshot", document_to_dict(doc), event_id=doc.version)]


_EVENT_ID: Final = re.compile(EVENT_ID_PATTERN)


def _last_event_id(request: web.Request, params: Mapping[str, str]) -> int | None:
    for name, raw in (
        ("Last-Event-ID", request.headers.get("Last-Event-ID")),
        ("last_event_id", params.get("last_event_id")),
    ):
        if raw is None:
            continue
        if _EVENT_ID.fullmatch(raw) is None:
            raise InvalidFieldError(name, f"expected a state version, got {raw!r}")
        if raw:
            return int(raw)
    return None


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one per state change, a keep-alive comment every ~15 s."""
    ctx = context(request)
    params = query_params(request, ("last_event_id",))
    last_id = _last_event_id(request, params)
    if ctx.event_streams >= ctx.settings.max_event_streams:
        raise ApiError(
            429,
            f"already {ctx.event_streams} event streams open; close one or retry later",
            headers={"Retry-After": "5"},
        )
    doc = ctx.store.current
    latest: list[StateDocument] = [doc]
    wake = asyncio.Event()

    def on_change(new: StateDocument) -> None:
        latest[0] = new
        wake.set()

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    ctx.event_streams += 1
    unsubscribe = ctx.store.subscribe(on_change)
    try:
        await response.prepare(request)
        # Tell EventSource how long to wait before reconnecting.
        await response.write(b"retry: 2000\n\n" + b"".join(catch_up(doc, last_id)))
        sent = doc
        closing = asyncio.ensure_future(ctx.closing.wait())
        try:
            while not ctx.closing.is_set():
                waiter = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait(
                    {waiter, closing},
                    timeout=ctx.settings.event_heartbeat,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
                if closing in done:
                    break
                if not done:
                    await response.write(b": keep-alive\n\n")
                    continue
                wake.clear()
                new = latest[0]
                if new.version > sent.version:
                    await response.write(change_event(sent, new))
                    sent = new
        finally:
            closing.cancel()
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client went away, or the server is stopping
    finally:
        unsubscribe()
        ctx.event_streams -= 1
    return response


# --------------------------------------------------------------------------- the app


ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/healthz", healthz, "healthz"),
    Route("GET", "/readyz", readyz, "readyz"),
    Route("GET", "/metrics", metrics, "metrics"),
    Route("GET", f"{API}/openapi.json", openapi, "openapi"),
    Route("GET", f"{API}/state", get_state, "getState"),
    Route("GET", f"{API}/weights", get_weights, "getWeights"),
    Route("PUT", f"{API}/weights", put_weights, "putWeights", mutating=True),
    Route("GET", f"{API}/flags", list_flags, "listFlags"),
    Route("GET", f"{API}/flags/evaluate", evaluate_flags, "evaluateFlags"),
    Route("GET", f"{API}/flags/{{name}}", get_flag, "getFlag"),
    Route("PUT", f"{API}/flags/{{name}}", put_flag, "putFlag", mutating=True),
    Route("DELETE", f"{API}/flags/{{name}}", delete_flag, "deleteFlag", mutating=True),
    Route("GET", f"{API}/replicas", get_replicas, "listReplicas"),
    Route("GET", f"{API}/stats", get_stats, "getStats"),
    Route("GET", f"{API}/events", events, "events"),
)


def create_app(
    ctx: AdminContext,
    *,
    extra_routes: Sequence[Route] = (),
    extra_schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> web.Application:
    """The aiohttp application serving :data:`ROUTES` plus ``extra_routes``.

    Route modules (e.g. the rollout endpoints) pass their own :class:`Route`
    table (each with its OpenAPI ``operation``) and component schemas here;
    they get the same auth, error handling and OpenAPI entry. Raises
    ``KeyError`` for a route without an OpenAPI operation.
    """
    routes = (*ROUTES, *extra_routes)
    seen: set[tuple[str, str]] = set()
    for route in routes:
        if (route.method, route.path) in seen:
            raise ValueError(f"route {route.method} {route.path} is declared twice")
        seen.add((route.method, route.path))
    app = web.Application(client_max_size=ctx.settings.max_body_bytes, middlewares=[_errors])
    app[CONTEXT] = ctx
    app[_OPENAPI_KEY] = build_document(routes, schemas=extra_schemas)
    app[_ROUTES_KEY] = routes
    for route in routes:
        handler = _guard(route.handler) if route.mutating else route.handler
        app.router.add_route(route.method, route.path, handler, name=route.operation_id)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_stop_streams)
    return app


async def _background(app: web.Application) -> Any:
    ctx = app[CONTEXT]
    task = None
    if ctx.stats is not None:
        task = asyncio.create_task(_sample_stats(ctx), name="admin-stats-sampler")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _stop_streams(app: web.Application) -> None:
    app[CONTEXT].closing.set()


@dataclass
class AdminServer:
    """A running admin listener; :meth:`close` stops it."""

    runner: web.AppRunner
    site: web.TCPSite
    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port`` of the listener."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and end open event streams."""
        await self.runner.cleanup()


async def start_admin(app: web.Application, host: str, port: int) -> AdminServer:
    """Listen on ``host:port`` (port 0 picks a free one); raises ``OSError`` when it cannot."""
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=2.0,
        handle_signals=False,
        max_line_size=MAX_REQUEST_LINE,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sockname = runner.addresses[0]
    return AdminServer(runner, site, str(sockname[0]), int(sockname[1]))
