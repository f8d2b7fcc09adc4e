"""The rollout endpoints of the admin API, with their OpenAPI operations and schemas.

Served by every replica (:func:`rollout_routes` plugs them into
:func:`bluegreen.admin.create_app`): a command is applied to the stored
record wherever it arrives (see :mod:`bluegreen.controller.runner`), and the
leading controller acts on it. Bodies are checked as the schemas say (the
schemas are built from the config, so the attestation names they accept are
exactly the configured ones); a command the rollout cannot take now is
answered **409** with the machine's message, the phase and the commands
allowed instead.

=======================================  ==========================================
``GET  /api/v1/rollout``                 the record, allowed commands, a summary
``POST /api/v1/rollout``                 start: version, steps, attestations, options
``POST /api/v1/rollout/pause``           hold at the current weight (bake clock stops)
``POST /api/v1/rollout/resume``          go on with the bake time left
``POST /api/v1/rollout/promote``         skip to 100 % (still confirmed by every replica)
``POST /api/v1/rollout/abort``           fall back to the old colour; ends ``aborted``
``POST /api/v1/rollout/contract``        run the contract migrations (``now``: skip grace)
``POST /api/v1/rollout/preflight``       run the checklist now; 200 with every item
=======================================  ==========================================
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from bluegreen.admin import (
    API,
    ApiError,
    Handler,
    Route,
    duration_seconds,
    json_response,
    query_params,
    read_json_object,
)
from bluegreen.admin_openapi import JSON
from bluegreen.controller.machine import (
    MAX_STEPS,
    Abort,
    ContractRequested,
    Event,
    Pause,
    Promote,
    Resume,
    Rollout,
    RolloutOptions,
    Step,
    normalize_steps,
)
from bluegreen.controller.preflight import Attestation
from bluegreen.controller.records import allowed_commands
from bluegreen.controller.runner import RolloutController
from bluegreen.errors import IllegalTransitionError, InvalidFieldError, UsageError
from bluegreen.routing import percent_to_bp
from bluegreen.state.model import StateDocument, check_text, json_type_name

ROLLOUT: Final = f"{API}/rollout"
VERSION_PATTERN: Final = r"^[\x21-\x7e][\x20-\x7e]{0,199}$"
BAKE_PATTERN: Final = r"^[0-9]{1,7}(\.[0-9]{1,3})?(ms|s|m|h)?$"
MAX_SECONDS: Final = 31_536_000.0  # a year: no bake, timeout or grace is longer
MAX_REASON: Final = 500
MAX_ATTESTATIONS: Final = 50
_VERSION = re.compile(VERSION_PATTERN)
_BAKE = re.compile(r"([0-9]{1,7}(?:\.[0-9]{1,3})?)(ms|s|m|h)?")
_OPTION_NUMBERS: Final = {
    "confirm_timeout_seconds": 0.001,
    "drain_timeout_seconds": 0.001,
    "contract_grace_seconds": 0.0,
}
_OPTION_FLAGS: Final = ("down_migrations_on_rollback", "check_old_colour", "auto_contract")


# =========================================================================== input


def parse_version(value: object, field: str = "version") -> str:
    """A version label: 1..200 printable ASCII characters, not starting with a space."""
    if not isinstance(value, str) or _VERSION.fullmatch(value) is None:
        raise InvalidFieldError(
            field, f"expected a version label like v2 or 2024.05.1 (printable ASCII), got {value!r}"
        )
    return value


def parse_bake(value: object, field: str) -> float:
    """Seconds from a number or a string like ``30s``, ``500ms``, ``5m``, ``1h``."""
    if isinstance(value, bool):
        raise InvalidFieldError(field, "expected seconds or a duration like 30s")
    if isinstance(value, int | float):
        seconds: float | None = float(value)
    else:
        seconds = duration_seconds(_BAKE, value) if isinstance(value, str) else None
    if seconds is None:
        raise InvalidFieldError(field, f'expected seconds or a duration like "30s", got {value!r}')
    if not 0 <= seconds <= MAX_SECONDS:
        raise InvalidFieldError(field, f"{value!r} out of range; use 0..{MAX_SECONDS:g} seconds")
    return seconds


def parse_steps(value: object) -> tuple[Step, ...]:
    """``[{"weight": 10, "bake": "30s"}, ...]``: weights (percent) strictly increasing."""
    if not isinstance(value, list) or not value:
        raise InvalidFieldError("steps", f"expected a non-empty array, got {json_type_name(value)}")
    if len(value) >= MAX_STEPS:
        raise InvalidFieldError("steps", f"{len(value)} steps; at most {MAX_STEPS - 1}")
    steps = []
    for i, item in enumerate(value):
        where = f"steps[{i}]"
        if not isinstance(item, dict):
            raise InvalidFieldError(where, f"expected an object, got {json_type_name(item)}")
        for key in item:
            if key not in ("weight", "bake"):
                raise InvalidFieldError(f"{where}.{key}", "unknown field; known: bake, weight")
        for key in ("weight", "bake"):
            if key not in item:
                raise InvalidFieldError(f"{where}.{key}", "missing")
        weight = item["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidFieldError(f"{where}.weight", "expected a percentage 0.01..100")
        try:
            bp = percent_to_bp(weight)
        except (ValueError, OverflowError) as exc:
            raise InvalidFieldError(f"{where}.weight", str(exc)) from None
        if bp == 0:
            raise InvalidFieldError(f"{where}.weight", "a step must send some traffic")
        steps.append(Step(bp, parse_bake(item["bake"], f"{where}.bake")))
    try:
        return normalize_steps(steps)
    except ValueError as exc:
        raise InvalidFieldError("steps", str(exc)) from None


def parse_options(value: object, defaults: RolloutOptions) -> RolloutOptions:
    """Per-rollout overrides of the config's rollout options."""
    if not isinstance(value, dict):
        raise InvalidFieldError("options", f"expected an object, got {json_type_name(value)}")
    known = (*_OPTION_NUMBERS, *_OPTION_FLAGS)
    changes: dict[str, Any] = {}
    for key, item in value.items():
        field = f"options.{key}"
        if key in _OPTION_NUMBERS:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise InvalidFieldError(field, f"expected seconds, got {json_type_name(item)}")
            if not _OPTION_NUMBERS[key] <= item <= MAX_SECONDS:
                raise InvalidFieldError(
                    field, f"{item} out of range; use {_OPTION_NUMBERS[key]:g}..{MAX_SECONDS:g}"
                )
            changes[key] = float(item)
        elif key in _OPTION_FLAGS:
            if not isinstance(item, bool):
                raise InvalidFieldError(
                    field, f"expected true or false, got {json_type_name(item)}"
                )
            changes[key] = item
        else:
            raise InvalidFieldError(field, f"unknown option; known: {', '.join(sorted(known))}")
    fields = {name: getattr(defaults, name) for name in (*_OPTION_NUMBERS, *_OPTION_FLAGS)}
    fields.update(changes)
    return RolloutOptions(**fields)


def parse_attestations(
    value: object, known: tuple[str, ...], by: str, at: float
) -> tuple[Attestation, ...]:
    """Names of configured attestations an operator vouches for."""
    if not isinstance(value, list):
        raise InvalidFieldError(
            "attest", f"expected an array of names, got {json_type_name(value)}"
        )
    if len(value) > MAX_ATTESTATIONS:
        raise InvalidFieldError("attest", f"{len(value)} names; at most {MAX_ATTESTATIONS}")
    names: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or name not in known:
            listed = ", ".join(known) or "none are configured (preflight.attestations)"
            raise InvalidFieldError(
                f"attest[{i}]", f"unknown attestation {name!r}; known: {listed}"
            )
        if name in names:
            raise InvalidFieldError(f"attest[{i}]", f"{name!r} given twice")
        names.append(name)
    return tuple(Attestation(n, by, at) for n in names)


def _by(body: Mapping[str, Any], request: web.Request) -> str:
    value = body.get("by")
    if value is None:
        return f"api ({request.remote or 'unknown'})"
    return check_text(value, "by", max_chars=200)


def _reason(body: Mapping[str, Any]) -> str | None:
    value = body.get("reason")
    if value is None:
        return None
    return check_text(value, "reason", max_chars=MAX_REASON)


async def _optional_body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object body, or {} when the request has none."""
    if not request.body_exists:
        return {}
    return await read_json_object(request, allowed=allowed)


# =========================================================================== handlers


def _conflict(exc: IllegalTransitionError, allowed: list[str]) -> ApiError:
    return ApiError(409, str(exc), phase=exc.phase, allowed=allowed)


async def _run_command(
    controller: RolloutController,
    make: Callable[[StateDocument, Rollout | None], Event],
    status: int = 200,
) -> web.Response:
    try:
        await controller.command(make)
    except IllegalTransitionError as exc:
        doc, rollout = controller.current()
        raise _conflict(exc, allowed_commands(rollout, doc, controller.clock())) from None
    return json_response(await controller.view(), status=status)


async def get_rollout(controller: RolloutController, request: web.Request) -> web.StreamResponse:
    """The rollout record, the commands allowed now and a summary."""
    query_params(request, ())
    return json_response(await controller.view())


START_FIELDS: Final = ("version", "steps", "attest", "options", "by")


async def start_rollout(controller: RolloutController, request: web.Request) -> web.StreamResponse:
    """Start a rollout of a version (201); 409 while one is active."""
    query_params(request, ())
    body = await read_json_object(request, allowed=START_FIELDS, required=("version",))
    version = parse_version(body["version"])
    steps = parse_steps(body["steps"]) if body.get("steps") is not None else None
    options = None
    if body.get("options") is not None:
        options = parse_options(body["options"], controller.settings.options)
    known = tuple(a.name for a in controller.settings.preflight.attestations)
    attest = body.get("attest")
    attestations: tuple[Attestation, ...] = ()
    if attest is not None:
        attestations = parse_attestations(attest, known, _by(body, request), controller.clock())
    elif body.get("by") is not None:
        _by(body, request)
    try:
        await controller.start_rollout(
            version, steps=steps, options=options, attestations=attestations
        )
    except IllegalTransitionError as exc:
        doc, rollout = controller.current()
        raise _conflict(exc, allowed_commands(rollout, doc, controller.clock())) from None
    except UsageError as exc:
        raise ApiError(422, str(exc), field="attest") from None
    return json_response(await controller.view(), status=201)


async def pause_rollout(controller: RolloutController, request: web.Request) -> web.StreamResponse:
    """Hold the rollout at its current weight; the bake clock stops."""
    query_params(request, ())
    body = await _optional_body(request, ("reason",))
    reason = _reason(body)
    message = f"paused by operator: {reason}" if reason else ""
    return await _run_command(controller, lambda doc, r: Pause(message))


async def resume_rollout(controller: RolloutController, request: web.Request) -> web.StreamResponse:
    """Continue a paused rollout with the bake time left."""
    query_params(request, ())
    await _optional_body(request, ())
    return await _run_command(controller, lambda doc, r: Resume())


async def promote_rollout(
    controller: RolloutController, request: web.Request
) -> web.StreamResponse:
    """Skip the remaining steps: 100 % now (confirmed by every replica)."""
    query_params(request, ())
    await _optional_body(request, ())
    return await _run_command(controller, lambda doc, r: Promote())


async def abort_rollout(controller: RolloutController, request: web.Request) -> web.StreamResponse:
    """Send all traffic back to the old colour; the rollout ends aborted."""
    query_params(request, ())
    body = await _optional_body(request, ("reason",))
    reason = _reason(body)
    message = f"aborted by operator: {reason}" if reason else ""
    return await _run_command(controller, lambda doc, r: Abort(message))


async def contract_rollout(
    controller: RolloutController, request: web.Request
) -> web.StreamResponse:
    """Run the contract migrations of a promoted rollout (``now``: skip the grace period)."""
    query_params(request, ())
    body = await _optional_body(request, ("now",))
    now = body.get("now", False)
    if not isinstance(now, bool):
        raise InvalidFieldError("now", f"expected true or false, got {json_type_name(now)}")
    return await _run_command(controller, lambda doc, r: ContractRequested(skip_grace=now))


PREFLIGHT_FIELDS: Final = ("version", "attest", "by")


async def rollout_preflight(
    controller: RolloutController, request: web.Request
) -> web.StreamResponse:
    """Run the preflight checklist now; 200 with every item (``ok`` false when one blocks)."""
    query_params(request, ())
    body = await _optional_body(request, PREFLIGHT_FIELDS)
    version = parse_version(body["version"]) if body.get("version") is not None else None
    known = tuple(a.name for a in controller.settings.preflight.attestations)
    attestations: tuple[Attestation, ...] = ()
    if body.get("attest") is not None:
        attestations = parse_attestations(
            body["attest"], known, _by(body, request), controller.clock()
        )
    elif body.get("by") is not None:
        _by(body, request)
    report = await controller.preflight(version, attestations)
    return json_response(report.to_json())


# =========================================================================== OpenAPI


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": dict(schema)}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _content(_ref("Error"))}


_TEXT_NO_CONTROL: Final = r"^[^\x00-\x1f\x7f]*$"
_REASON: Final = {
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_REASON, "pattern": _TEXT_NO_CONTROL},
        {"type": "null"},
    ],
    "description": "Recorded in the rollout's log and the notifications.",
}
_BY: Final = {
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _TEXT_NO_CONTROL},
        {"type": "null"},
    ],
    "description": "Who vouches for the attestations (default: the API and the caller's address).",
}
_SECONDS: Final = {"type": "number", "minimum": 0, "maximum": MAX_SECONDS}


def _attest_schema(known: tuple[str, ...]) -> dict[str, Any]:
    items: dict[str, Any] = {"type": "string", "enum": list(known)} if known else {}
    schema: dict[str, Any] = {
        "type": "array",
        "uniqueItems": True,
        "maxItems": min(MAX_ATTESTATIONS, len(known)),
        "description": "Checklist items no machine can check, vouched for by the caller "
        "(preflight.attestations).",
    }
    if items:
        schema["items"] = items
    return {"oneOf": [schema, {"type": "null"}]}


def rollout_schemas(known_attestations: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The component schemas of the rollout operations."""
    version = {"type": "string", "pattern": VERSION_PATTERN, "description": "Version label."}
    step = {
        "type": "object",
        "required": ["weight", "bake"],
        "additionalProperties": False,
        "properties": {
            "weight": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 100,
                "multipleOf": 0.01,
                "description": "Percent of traffic for the new colour.",
            },
            "bake": {
                "oneOf": [_SECONDS, {"type": "string", "pattern": BAKE_PATTERN}],
                "description": "How long to hold the step while analysis watches "
                "(seconds, or 30s / 5m / 1h).",
            },
        },
    }
    options = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "confirm_timeout_seconds": {"type": "number", "minimum": 0.001, "maximum": MAX_SECONDS},
            "drain_timeout_seconds": {"type": "number", "minimum": 0.001, "maximum": MAX_SECONDS},
            "contract_grace_seconds": _SECONDS,
            "down_migrations_on_rollback": {"type": "boolean"},
            "check_old_colour": {"type": "boolean"},
            "auto_contract": {"type": "boolean"},
        },
        "description": "Overrides of the config's rollout section for this rollout.",
    }
    return {
        "RolloutStart": {
            "type": "object",
            "required": ["version"],
            "additionalProperties": False,
            "properties": {
                "version": version,
                "steps": {
                    "oneOf": [
                        {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_STEPS - 1,
                            "items": step,
                            "description": "Weights must strictly increase; a 100 % step is "
                            "added when missing. Default: the config's rollout.steps.",
                        },
                        {"type": "null"},
                    ]
                },
                "attest": _attest_schema(known_attestations),
                "options": {"oneOf": [options, {"type": "null"}]},
                "by": _BY,
            },
        },
        "RolloutReason": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"reason": _REASON},
        },
        "RolloutEmpty": {"type": "object", "additionalProperties": False, "properties": {}},
        "RolloutContract": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "now": {
                    "type": "boolean",
                    "description": "Skip what is left of the grace period after the old "
                    "colour drained.",
                }
            },
        },
        "RolloutPreflightRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "version": {"oneOf": [version, {"type": "null"}]},
                "attest": _attest_schema(known_attestations),
                "by": _BY,
            },
        },
        "Rollout": {
            "type": "object",
            "required": ["state_version", "phase", "summary", "allowed", "weights", "rollout"],
            "properties": {
                "state_version": {"type": "integer", "minimum": 0},
                "phase": {
                    "type": "string",
                    "enum": [
                        "idle",
                        "preflight",
                        "migrating",
                        "smoke",
                        "ramp",
                        "bake",
                        "promoted",
                        "rolling_back",
                        "rolled_back",
                        "aborted",
                    ],
                },
                "summary": {"type": "string"},
                "allowed": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "enum": ["start", "pause", "resume", "promote", "abort", "contract"],
                    },
                },
                "weights": {"type": "object"},
                "rollout": {"oneOf": [{"type": "object"}, {"type": "null"}]},
                "leader": {"oneOf": [{"type": "string"}, {"type": "null"}]},
                "analysis": {"oneOf": [{"type": "object"}, {"type": "null"}]},
            },
        },
        "PreflightReport": {
            "type": "object",
            "required": ["ok", "version", "target", "items"],
            "properties": {
                "ok": {"type": "boolean"},
                "version": {"type": "string"},
                "target": {"type": "string", "enum": ["blue", "green"]},
                "seconds": {"type": "number"},
                "items": {"type": "array", "items": {"type": "object"}},
                "attestations": {"type": "array", "items": {"type": "object"}},
            },
        },
    }


def _command(summary: str, body: str | None, description: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "tags": ["rollout"],
        "responses": {
            "200": {"description": "Applied.", "content": _content(_ref("Rollout"))},
            "400": _error("The body is not JSON."),
            "409": _error(
                "The rollout cannot take this command in its phase; `phase` and `allowed` say "
                "what it can take."
            ),
            "415": _error("The body is not application/json."),
            "422": _error("A field is invalid; `field` names it."),
        },
    }
    if body is not None:
        operation["requestBody"] = {"required": False, "content": _content(_ref(body))}
    return operation


_Handler = Callable[[RolloutController, web.Request], Awaitable[web.StreamResponse]]


def _bind(handler: _Handler, controller: RolloutController) -> Handler:
    async def bound(request: web.Request) -> web.StreamResponse:
        return await handler(controller, request)

    bound.__doc__ = handler.__doc__
    return bound


def rollout_routes(controller: RolloutController) -> tuple[list[Route], dict[str, Any]]:
    """The routes (with OpenAPI operations) and component schemas to pass to ``create_app``."""
    known = tuple(a.name for a in controller.settings.preflight.attestations)
    routes = [
        Route(
            "GET",
            ROLLOUT,
            _bind(get_rollout, controller),
            "getRollout",
            operation={
                "summary": "The rollout: record, commands allowed now, summary, leader.",
                "tags": ["rollout"],
                "responses": {
                    "200": {"description": "The rollout.", "content": _content(_ref("Rollout"))},
                    "422": _error("A parameter is invalid."),
                },
            },
        ),
        Route(
            "POST",
            ROLLOUT,
            _bind(start_rollout, controller),
            "startRollout",
            mutating=True,
            operation={
                "summary": "Start a rollout of a version.",
                "description": "Preflight, migrations (expand, migrate), smoke tests, then the "
                "ramp with health analysis; automatic fallback when a check fails.",
                "tags": ["rollout"],
                "requestBody": {"required": True, "content": _content(_ref("RolloutStart"))},
                "responses": {
                    "201": {"description": "Started.", "content": _content(_ref("Rollout"))},
                    "400": _error("The body is not JSON."),
                    "409": _error("A rollout is active, or the weights are split."),
                    "415": _error("The body is not application/json."),
                    "422": _error("A field is invalid (e.g. step weights not increasing)."),
                },
            },
        ),
        Route(
            "POST",
            f"{ROLLOUT}/pause",
            _bind(pause_rollout, controller),
            "pauseRollout",
            mutating=True,
            operation=_command(
                "Pause the rollout.",
                "RolloutReason",
                "Holds the current weight; the bake clock stops. Analysis keeps watching.",
            ),
        ),
        Route(
            "POST",
            f"{ROLLOUT}/resume",
            _bind(resume_rollout, controller),
            "resumeRollout",
            mutating=True,
            operation=_command(
                "Resume a paused rollout.", "RolloutEmpty", "Continues with the bake time left."
            ),
        ),
        Route(
            "POST",
            f"{ROLLOUT}/promote",
            _bind(promote_rollout, controller),
            "promoteRollout",
            mutating=True,
            operation=_command(
                "Promote now.",
                "RolloutEmpty",
                "Skips the remaining steps and bakes; promoted once every replica sends 100 %.",
            ),
        ),
        Route(
            "POST",
            f"{ROLLOUT}/abort",
            _bind(abort_rollout, controller),
            "abortRollout",
            mutating=True,
            operation=_command(
                "Abort the rollout.",
                "RolloutReason",
                "Sends all traffic back to the old colour at once; the rollout ends aborted.",
            ),
        ),
        Route(
            "POST",
            f"{ROLLOUT}/contract",
            _bind(contract_rollout, controller),
            "contractRollout",
            mutating=True,
            operation=_command(
                "Run the contract migrations.",
                "RolloutContract",
                "Only for a promoted rollout whose old colour drained and whose grace period "
                "passed (or with now: true).",
            ),
        ),
        Route(
            "POST",
            f"{ROLLOUT}/preflight",
            _bind(rollout_preflight, controller),
            "rolloutPreflight",
            mutating=True,
            operation={
                "summary": "Run the preflight checklist now.",
                "description": "Every item with ✓/✗ and the reason; `ok` is false when a "
                "required item failed. Records the result in the state history.",
                "tags": ["rollout"],
                "requestBody": {
                    "required": False,
                    "content": _content(_ref("RolloutPreflightRequest")),
                },
                "responses": {
                    "200": {
                        "description": "The checklist.",
                        "content": _content(_ref("PreflightReport")),
                    },
                    "400": _error("The body is not JSON."),
                    "415": _error("The body is not application/json."),
                    "422": _error("A field is invalid."),
                },
            },
        ),
    ]
    return routes, rollout_schemas(known)
