"""Parsers of the rollout controller's config sections: YAML value -> frozen dataclass.

``parse_smoke``, ``parse_health``, ``parse_notifications`` and
``parse_preflight`` each take the raw value of their top-level key and its key
path, and raise :class:`~bluegreen.errors.ConfigError` naming the offending
key (``smoke.checks[1].http.expect.status: ...``). The values and what they
mean are documented in :mod:`bluegreen.rollout_config`.

This module uses the helpers of :mod:`bluegreen.config`, which imports it
lazily from ``parse_config`` (``config`` itself needs the dataclasses of
:mod:`bluegreen.rollout_config` at import time).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, TypeVar
from urllib.parse import urlsplit

from bluegreen.config import (
    _Section,
    parse_bool,
    parse_duration,
    parse_int,
    parse_percent,
    parse_str,
)
from bluegreen.controller.conditions import Fact
from bluegreen.errors import ConfigError
from bluegreen.health.analysis import AnalysisConfig, InconclusivePolicy
from bluegreen.health.probe_state import ProbeHealth, ProbeThresholds
from bluegreen.rollout_config import (
    DEFAULT_ITEM_MODES,
    JSON,
    PREFLIGHT_ITEMS,
    AttestationConfig,
    CheckSpec,
    CommandCheck,
    HealthConfig,
    HttpCheck,
    HttpExpect,
    ItemMode,
    JsonPath,
    NotificationsConfig,
    PreflightConfig,
    ProbeConfig,
    SmokeCheck,
    SmokeConfig,
    SmokeRole,
    SqlCheck,
    WebhookConfig,
    WebhookKind,
    parse_json_path,
    parse_status_ranges,
)
from bluegreen.routing import BASIS_POINTS, Colour

T = TypeVar("T")

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_METHOD = re.compile(r"^[A-Z][A-Z0-9_-]{0,19}$")
_CHECK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# =========================================================================== parsing helpers


def _optional(parse: Callable[[object, str], T]) -> Callable[[object, str], T | None]:
    def parse_optional(value: object, key: str) -> T | None:
        return None if value is None else parse(value, key)

    return parse_optional


def _optional_url(value: object, key: str) -> str | None:
    """An optional URL; empty (an unset ``${VAR:-}``) means not set."""
    if value is None or value == "":
        return None
    return parse_str(value, key)


def _optional_http_url(value: object, key: str) -> str | None:
    return None if value is None or value == "" else _http_url(value, key)


def _positive_duration(value: object, key: str) -> float:
    seconds = parse_duration(value, key)
    if seconds <= 0:
        raise ConfigError(key, "must be greater than 0")
    return seconds


def _int_range(lo: int, hi: int | None = None) -> Callable[[object, str], int]:
    def parse(value: object, key: str) -> int:
        return parse_int(value, key, minimum=lo, maximum=hi)

    return parse


def _percent_fraction(value: object, key: str) -> float:
    return parse_percent(value, key) / BASIS_POINTS


def _float(value: object, key: str, *, minimum: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, f"expected a number, got {value!r}")
    if value < minimum:
        raise ConfigError(key, f"{value} is too small; use at least {minimum:g}")
    return float(value)


def _check_json(value: object, key: str) -> JSON:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(key, f"{value} is not a JSON number")
        return value
    if isinstance(value, list):
        return [_check_json(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, JSON] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{key}.{k}", "JSON object keys must be strings")
            out[k] = _check_json(v, f"{key}.{k}")
        return out
    raise ConfigError(key, f"{type(value).__name__} cannot be sent as JSON")


def _scalar_text(value: object, key: str) -> str:
    """A YAML scalar as text: strings as they are, numbers written out; else ConfigError."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(key, f"expected text, got {value!r}")
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError(key, f"expected text, got {type(value).__name__}")
    return value


def _text(value: object, key: str) -> str:
    """A string (numbers from YAML become text), without line breaks."""
    text = _scalar_text(value, key)
    if "\r" in text or "\n" in text:
        raise ConfigError(key, "must not contain line breaks")
    return text


def _arg(value: object, key: str) -> str:
    """A command-line argument: any text but NUL (scripts for ``-c`` span lines)."""
    text = _scalar_text(value, key)
    if "\0" in text:
        raise ConfigError(key, "must not contain NUL characters")
    return text


def _texts(value: object, key: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(parse_str(v, f"{key}[{i}]") for i, v in enumerate(items))


def _headers(value: object, key: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(key, 'expected a mapping of header names to values, e.g. {X-Smoke: "1"}')
    out = []
    for name, raw in value.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ConfigError(where, f"{name!r} is not a valid header name")
        out.append((name, _text(raw, where)))
    return tuple(out)


def _path(value: object, key: str) -> str:
    text = parse_str(value, key)
    if not text.startswith("/") or any(c in text for c in " \r\n\t"):
        raise ConfigError(key, f'expected a request path like "/health", got {value!r}')
    return text


def _method(value: object, key: str) -> str:
    text = parse_str(value, key).upper()
    if not _METHOD.match(text):
        raise ConfigError(key, f"{value!r} is not an HTTP method")
    return text


def _http_url(value: object, key: str) -> str:
    text = parse_str(value, key).strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError for a bad port
    except ValueError:
        host = None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ConfigError(key, "expected an http(s) URL like https://hooks.example.com/T0/B0")
    return text


def _argv(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(key, f"cannot split command {value!r}: {exc}") from None
    elif isinstance(value, list):
        argv = [_arg(v, f"{key}[{i}]") for i, v in enumerate(value)]
    else:
        raise ConfigError(key, 'expected a command as a list, e.g. ["./smoke.sh", "--quick"]')
    if not argv or not argv[0]:
        raise ConfigError(key, "the command is empty")
    return tuple(argv)


def _env(value: object, key: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(key, "expected a mapping of environment variables to values")
    out = []
    for name, raw in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ConfigError(f"{key}.{name}", f"{name!r} is not a valid environment variable")
        if isinstance(raw, bool) or raw is None:
            raise ConfigError(f"{key}.{name}", f"expected text, got {raw!r}")
        out.append((name, str(raw)))
    return tuple(out)


# =========================================================================== parse: smoke


def _parse_expect(value: object, key: str) -> HttpExpect:
    s = _Section(value, key)
    d = HttpExpect()
    regexes = []
    patterns: tuple[str, ...] = s.get("body_regex", _texts, ())
    for i, pattern in enumerate(patterns):
        try:
            regexes.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"{s.key('body_regex')}[{i}]", f"invalid regex: {exc}") from None
    json_pairs: list[tuple[JsonPath, JSON]] = []
    json_s = s.section("json")
    for path_text, expected in json_s.data.items():
        where = json_s.key(str(path_text))
        json_pairs.append((parse_json_path(path_text, where), _check_json(expected, where)))
    expect = HttpExpect(
        status=s.get("status", parse_status_ranges, d.status),
        body_contains=s.get("body_contains", _texts, ()),
        body_regex=tuple(regexes),
        json=tuple(json_pairs),
        headers=s.get("headers", _headers, ()),
        max_latency=s.get("max_latency", _optional(_positive_duration), None),
    )
    s.finish()
    return expect


def _parse_http(value: object, key: str) -> HttpCheck:
    if isinstance(value, str):  # shorthand: `http: /health`
        return HttpCheck(path=_path(value, key))
    s = _Section(value, key)
    if s.has("body") and s.has("json"):
        raise ConfigError(s.key("json"), "give either body (text) or json, not both")
    d = HttpCheck()
    check = HttpCheck(
        method=s.get("method", _method, d.method),
        path=s.get("path", _path, d.path),
        headers=s.get("headers", _headers, ()),
        body=s.get("body", lambda v, k: v if isinstance(v, str) else _text(v, k), None),
        json_body=s.get("json", _check_json, None),
        has_json_body=s.has("json"),
        timeout=s.get("timeout", _positive_duration, d.timeout),
        repeat=s.get("repeat", _int_range(1, 100), d.repeat),
        expect=_parse_expect(s.raw("expect"), s.key("expect")),
    )
    s.finish()
    return check


def _parse_sql(value: object, key: str) -> SqlCheck:
    s = _Section(value, key)
    check = SqlCheck(
        require=s.get("require", _texts, ()),
        min_version=s.get("min_version", _optional(_int_range(1)), None),
        database_url=s.get("database_url", _optional_url, None),
    )
    s.finish()
    for i, req in enumerate(check.require):
        parts = req.split(".")
        if not 1 <= len(parts) <= 3 or not all(p.strip() for p in parts):
            raise ConfigError(
                f"{s.key('require')}[{i}]",
                f"cannot read {req!r}: write TABLE, TABLE.COLUMN or SCHEMA.TABLE.COLUMN",
            )
    if not check.require and check.min_version is None:
        raise ConfigError(key, "a sql check needs require: [TABLE.COLUMN, ...] or min_version")
    return check


def parse_command(value: object, key: str, *, default_timeout: float = 60.0) -> CommandCheck:
    """``argv: [...]`` (or a string, split like a shell would), ``timeout``, ``env``, ``cwd``."""
    if isinstance(value, str | list):
        return CommandCheck(argv=_argv(value, key), timeout=default_timeout)
    s = _Section(value, key)
    if not s.has("argv"):
        raise ConfigError(s.key("argv"), 'missing; give the command, e.g. argv: ["./smoke.sh"]')
    check = CommandCheck(
        argv=s.get("argv", _argv, ()),
        timeout=s.get("timeout", _positive_duration, default_timeout),
        env=s.get("env", _env, ()),
        cwd=s.get("cwd", _optional(parse_str), None),
    )
    s.finish()
    return check


_KINDS: Final[Mapping[str, Callable[[object, str], CheckSpec]]] = {
    "http": _parse_http,
    "sql": _parse_sql,
    "command": parse_command,
}


def _parse_check(value: object, key: str) -> SmokeCheck:
    s = _Section(value, key)
    name = s.get("name", parse_str, "")
    if not name:
        raise ConfigError(s.key("name"), "every smoke check needs a name, e.g. name: health")
    if not _CHECK_NAME.match(name):
        raise ConfigError(
            s.key("name"), f"{name!r}: use 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    kinds = [k for k in _KINDS if s.has(k)]
    if len(kinds) != 1:
        raise ConfigError(
            key,
            f"check {name!r} needs exactly one of http, sql or command"
            + (f" (found {', '.join(kinds)})" if kinds else ""),
        )
    default: CheckSpec = HttpCheck()  # never used: the key is present
    spec = s.get(kinds[0], _KINDS[kinds[0]], default)
    s.finish()
    return SmokeCheck(name, spec)


def _parse_checks(value: object, key: str) -> tuple[SmokeCheck, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(key, "expected a list of checks, e.g. [{name: health, http: /health}]")
    return tuple(_parse_check(v, f"{key}[{i}]") for i, v in enumerate(value))


def parse_smoke(data: object, key_prefix: str = "smoke") -> SmokeConfig:
    """Validate the ``smoke:`` section."""
    s = _Section(data, key_prefix)
    d = SmokeConfig()
    cfg = SmokeConfig(
        checks=s.get("checks", _parse_checks, ()),
        target=s.get("target", _parse_checks, ()),
        live=s.get("live", _parse_checks, ()),
        blue=s.get("blue", _parse_checks, ()),
        green=s.get("green", _parse_checks, ()),
        timeout=s.get("timeout", _positive_duration, d.timeout),
        database_url=s.get("database_url", _optional_url, None),
        default_check=s.get("default_check", parse_bool, d.default_check),
    )
    s.finish()
    for colour in Colour:
        for role in SmokeRole:
            names = [c.name for c in cfg.checks_for(colour, role)]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ConfigError(
                    key_prefix,
                    f"check name {dupes[0]!r} is used twice for {colour} as {role}; names "
                    "must be unique among checks, the role's and the colour's lists",
                )
    return cfg


# =========================================================================== parse: health


def _parse_probes(s: _Section) -> ProbeConfig:
    d = ProbeConfig()
    dt = d.thresholds
    method = s.get("method", _method, d.method)
    if method not in ("GET", "HEAD"):
        raise ConfigError(s.key("method"), f"probes use GET or HEAD, got {method!r}")
    thresholds = ProbeThresholds(
        healthy_threshold=s.get("healthy_threshold", _int_range(1, 100), dt.healthy_threshold),
        unhealthy_threshold=s.get(
            "unhealthy_threshold", _int_range(1, 100), dt.unhealthy_threshold
        ),
        initial=s.get("initial", _probe_health, dt.initial),
        first_success_marks_healthy=s.get(
            "first_success_marks_healthy", parse_bool, dt.first_success_marks_healthy
        ),
    )
    cfg = ProbeConfig(
        enabled=s.get("enabled", parse_bool, d.enabled),
        path=s.get("path", _path, d.path),
        method=method,
        headers=s.get("headers", _headers, ()),
        interval=s.get("interval", _positive_duration, d.interval),
        timeout=s.get("timeout", _positive_duration, d.timeout),
        expected_status=s.get("expected_status", parse_status_ranges, d.expected_status),
        thresholds=thresholds,
        max_connections=s.get("max_connections", _int_range(1, 10_000), d.max_connections),
        first_probe_jitter=s.get("first_probe_jitter", _optional(parse_duration), None),
    )
    s.finish()
    if cfg.timeout > cfg.interval:
        raise ConfigError(
            s.key("timeout"),
            f"probe timeout ({cfg.timeout:g} s) is longer than the interval "
            f"({cfg.interval:g} s); probes of one server never overlap, so lower the timeout "
            "or raise the interval",
        )
    return cfg


def _probe_health(value: object, key: str) -> ProbeHealth:
    try:
        return ProbeHealth(parse_str(value, key))
    except ValueError:
        raise ConfigError(key, f"expected healthy or unhealthy, got {value!r}") from None


def _parse_analysis(s: _Section) -> tuple[bool, float, AnalysisConfig]:
    d = AnalysisConfig()
    enabled = s.get("enabled", parse_bool, True)
    interval = s.get("interval", _positive_duration, 5.0)
    policy_text = s.get("on_inconclusive", parse_str, d.on_inconclusive.value)
    try:
        policy = InconclusivePolicy(policy_text)
    except ValueError:
        raise ConfigError(
            s.key("on_inconclusive"), f"expected pause or fail, got {policy_text!r}"
        ) from None
    try:
        cfg = AnalysisConfig(
            min_requests=s.get("min_requests", _int_range(1), d.min_requests),
            max_error_rate=s.get("max_error_percent", _percent_fraction, d.max_error_rate),
            error_rate_margin=s.get("error_margin_percent", _percent_fraction, d.error_rate_margin),
            p99_factor=s.get("p99_factor", lambda v, k: _float(v, k, minimum=1.0), d.p99_factor),
            p99_floor_seconds=s.get("p99_floor", parse_duration, d.p99_floor_seconds),
            max_p99_seconds=s.get("max_p99", _optional(_positive_duration), d.max_p99_seconds),
            consecutive_failure_limit=s.get(
                "consecutive_failure_limit", _int_range(1), d.consecutive_failure_limit
            ),
            failure_limit=s.get("failure_limit", _optional(_int_range(1)), d.failure_limit),
            consecutive_error_limit=s.get(
                "consecutive_error_limit", _int_range(1), d.consecutive_error_limit
            ),
            inconclusive_limit=s.get(
                "inconclusive_limit", _optional(_int_range(1)), d.inconclusive_limit
            ),
            on_inconclusive=policy,
        )
    except ValueError as exc:  # AnalysisConfig's own cross-field checks
        raise ConfigError(s.path, str(exc)) from None
    s.finish()
    return enabled, interval, cfg


def parse_health(data: object, key_prefix: str = "health") -> HealthConfig:
    """Validate the ``health:`` section (``probes:`` and ``analysis:``)."""
    s = _Section(data, key_prefix)
    probes = _parse_probes(s.section("probes"))
    enabled, interval, analysis = _parse_analysis(s.section("analysis"))
    s.finish()
    return HealthConfig(
        probes=probes, analysis=analysis, analysis_enabled=enabled, analysis_interval=interval
    )


# =========================================================================== parse: notifications


def _facts(value: object, key: str) -> frozenset[str] | None:
    items = value if isinstance(value, list) else [value]
    known = {f.value for f in Fact}
    facts = set()
    for i, item in enumerate(items):
        text = parse_str(item, f"{key}[{i}]")
        if text in ("*", "all"):
            return None
        if text not in known:
            raise ConfigError(
                f"{key}[{i}]", f"unknown fact {text!r}; known facts: {', '.join(sorted(known))}"
            )
        facts.add(text)
    return frozenset(facts)


def _parse_webhook(value: object, key: str, index: int) -> WebhookConfig:
    if isinstance(value, str):
        value = {"url": value}
    s = _Section(value, key)
    if not s.has("url"):
        raise ConfigError(s.key("url"), "missing; give the webhook URL (use ${ENV} for secrets)")
    kind_text = s.get("kind", parse_str, WebhookKind.JSON.value)
    try:
        kind = WebhookKind(kind_text)
    except ValueError:
        raise ConfigError(s.key("kind"), f"expected json or slack, got {kind_text!r}") from None
    cfg = WebhookConfig(
        name=s.get("name", parse_str, f"webhook{index + 1}"),
        url=s.get("url", _http_url, ""),
        kind=kind,
        headers=s.get("headers", _headers, ()),
        timeout=s.get("timeout", _positive_duration, 5.0),
        facts=s.get("facts", _facts, None),
        slack_blocks=s.get("slack_blocks", parse_bool, False),
    )
    s.finish()
    return cfg


def parse_notifications(data: object, key_prefix: str = "notifications") -> NotificationsConfig:
    """Validate the ``notifications:`` section."""
    s = _Section(data, key_prefix)
    d = NotificationsConfig()
    raw = s.raw("webhooks")
    if raw is not None and not isinstance(raw, list):
        raise ConfigError(s.key("webhooks"), "expected a list of webhooks")
    webhooks = tuple(
        _parse_webhook(v, f"{s.key('webhooks')}[{i}]", i) for i, v in enumerate(raw or [])
    )
    names = [w.name for w in webhooks]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{s.key('webhooks')}[{i}].name", f"webhook name {name!r} used twice")
    cfg = NotificationsConfig(
        webhooks=webhooks,
        queue_size=s.get("queue_size", _int_range(1, 1_000_000), d.queue_size),
        retries=s.get("retries", _int_range(0, 100), d.retries),
        backoff_initial=s.get("backoff_initial", _positive_duration, d.backoff_initial),
        backoff_max=s.get("backoff_max", _positive_duration, d.backoff_max),
        close_timeout=s.get("close_timeout", parse_duration, d.close_timeout),
    )
    s.finish()
    if cfg.backoff_max < cfg.backoff_initial:
        raise ConfigError(s.key("backoff_max"), "must not be below backoff_initial")
    return cfg


# =========================================================================== parse: preflight


def _parse_attestation(value: object, key: str) -> AttestationConfig:
    s = _Section(value, key)
    name = s.get("name", parse_str, "")
    if not name or not _CHECK_NAME.match(name):
        raise ConfigError(
            s.key("name"), f"{name!r}: use 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    if name in PREFLIGHT_ITEMS:
        raise ConfigError(s.key("name"), f"{name!r} is a built-in preflight item; pick another")
    cfg = AttestationConfig(
        name=name,
        description=s.get("description", parse_str, name.replace("_", " ")),
        link=s.get("link", _optional(parse_str), None),
        required=s.get("required", parse_bool, True),
    )
    s.finish()
    return cfg


def _item_modes(value: object, key: str) -> Mapping[str, ItemMode]:
    s = _Section(value, key)
    modes = dict(DEFAULT_ITEM_MODES)
    for name in list(s.data):
        where = s.key(str(name))
        if name not in PREFLIGHT_ITEMS:
            raise ConfigError(
                where, f"unknown preflight item; known items: {', '.join(PREFLIGHT_ITEMS)}"
            )
        text = s.get(name, parse_str, "")
        try:
            modes[name] = ItemMode(text)
        except ValueError:
            raise ConfigError(where, f"expected required, warn or skip, got {text!r}") from None
    s.finish()
    return MappingProxyType(modes)


def parse_preflight(data: object, key_prefix: str = "preflight") -> PreflightConfig:
    """Validate the ``preflight:`` section."""
    s = _Section(data, key_prefix)
    d = PreflightConfig()
    attestations = d.attestations
    if s.has("attestations"):
        raw = s.raw("attestations")
        if raw is not None and not isinstance(raw, list):
            raise ConfigError(s.key("attestations"), "expected a list of attestations")
        attestations = tuple(
            _parse_attestation(v, f"{s.key('attestations')}[{i}]") for i, v in enumerate(raw or [])
        )
        names = [a.name for a in attestations]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ConfigError(
                    f"{s.key('attestations')}[{i}].name", f"attestation {name!r} listed twice"
                )
    cfg = PreflightConfig(
        timeout=s.get("timeout", _positive_duration, d.timeout),
        metrics_url=s.get("metrics_url", _optional_http_url, None),
        backup_check=s.get("backup_check", _optional(parse_command), None),
        attestations=attestations,
        items=s.get("items", _item_modes, DEFAULT_ITEM_MODES),
    )
    s.finish()
    return cfg
