"""Config sections of the rollout controller's I/O shells. Pure: no I/O, clock or randomness.

Four top-level sections, each a frozen dataclass; their parsers
(``parse_<section>`` in :mod:`bluegreen.rollout_config_parse`) are called by
:func:`bluegreen.config.parse_config` with the raw YAML value and the key path:

``smoke:``          checks sent straight to one colour's servers before it gets
                    traffic (:mod:`bluegreen.controller.smoke`)
``health:``         active probes (:mod:`bluegreen.health.probes`) and the limits of
                    health analysis (:class:`~bluegreen.health.analysis.AnalysisConfig`)
``notifications:``  webhooks told about every phase change and fallback
                    (:mod:`bluegreen.notify`)
``preflight:``      the pre-production checklist run before every rollout
                    (:mod:`bluegreen.controller.preflight`)

Smoke checks and where they run
-------------------------------
A rollout smoke-tests two colours: the *target* (the new version, before it
gets any traffic) and, after the expand and migrate phases, the *live* colour
again (the old code must still work on the new schema: the seed's "does the
code work with and without the migration?"). Colours swap roles after every
promotion, so checks are chosen by role first::

    smoke:
      checks: [...]   # both roles, every colour
      target: [...]   # only the new version (e.g. a new endpoint, new columns)
      live: [...]     # only the old version on the new schema
      blue: [...]     # only when blue is tested (colour-specific paths or ports)
      green: [...]

In paths, header values, bodies and expected texts, ``{colour}``,
``{version}`` and ``{role}`` are replaced when the check runs (``{version}``
is the version label the colour runs), so ``body_contains: "{version}"``
checks that the colour really runs the version being rolled out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypeAlias

from bluegreen.errors import ConfigError
from bluegreen.health.analysis import AnalysisConfig
from bluegreen.health.probe_state import ProbeThresholds
from bluegreen.routing import Colour
from bluegreen.state.model import json_type_name

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None


# =========================================================================== values


@dataclass(frozen=True, slots=True)
class StatusRanges:
    """Accepted HTTP statuses: ``200``, ``[200, 204]``, ``"2xx"``, ``"200-399"``."""

    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and any(lo <= status <= hi for lo, hi in self.ranges)

    def __str__(self) -> str:
        parts = []
        for lo, hi in self.ranges:
            if lo == hi:
                parts.append(str(lo))
            elif lo % 100 == 0 and hi == lo + 99:
                parts.append(f"{lo // 100}xx")
            else:
                parts.append(f"{lo}-{hi}")
        return " or ".join(parts)


SUCCESS: Final = StatusRanges(((200, 299),))
HEALTHY_STATUS: Final = StatusRanges(((200, 399),))  # Kubernetes httpGet semantics

_STATUS_ITEM = re.compile(r"^\s*(?:([1-5])xx|(\d{3})\s*-\s*(\d{3})|(\d{3}))\s*$", re.IGNORECASE)


def parse_status_ranges(value: object, key: str) -> StatusRanges:
    """``200``, ``"2xx"``, ``"200-299"`` or a list of those."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(key, 'expected a status like 200, "2xx" or "200-299", got []')
    ranges: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]" if isinstance(value, list) else key
        if isinstance(item, int) and not isinstance(item, bool):
            lo = hi = item
        elif isinstance(item, str) and (m := _STATUS_ITEM.match(item)):
            if m.group(1):
                lo = int(m.group(1)) * 100
                hi = lo + 99
            elif m.group(2):
                lo, hi = int(m.group(2)), int(m.group(3))
            else:
                lo = hi = int(m.group(4))
        else:
            raise ConfigError(
                where, f'expected a status like 200, "2xx" or "200-299", got {item!r}'
            )
        if not 100 <= lo <= hi <= 599:
            raise ConfigError(where, f"{item!r}: statuses are 100..599, low before high")
        ranges.append((lo, hi))
    return StatusRanges(tuple(ranges))


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A simple JSON path: dotted keys and ``[index]`` (``checks[0].ok``, ``$.data.id``)."""

    text: str
    parts: tuple[str | int, ...]

    def lookup(self, document: object) -> tuple[bool, object, str]:
        """``(found, value, problem)``; ``problem`` says where the path stopped matching."""
        node = document
        walked = "$"
        for part in self.parts:
            if isinstance(part, int):
                if not isinstance(node, list):
                    return False, None, f"{walked} is {json_type_name(node)}, not an array"
                if not -len(node) <= part < len(node):
                    return False, None, f"{walked} has {len(node)} item(s); no index {part}"
                node = node[part]
                walked += f"[{part}]"
            else:
                if not isinstance(node, dict):
                    return False, None, f"{walked} is {json_type_name(node)}, not an object"
                if part not in node:
                    return False, None, f"{walked} has no key {part!r}"
                node = node[part]
                walked += f".{part}"
        return True, node, ""


_PATH_TOKEN = re.compile(r"\[(-?\d+)\]|\.?([^.\[\]]+)")


def parse_json_path(text: object, key: str) -> JsonPath:
    """Parse ``a.b[0].c`` (an optional leading ``$`` or ``$.`` is allowed)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(key, f"expected a JSON path like status or checks[0].ok, got {text!r}")
    rest = text.strip()
    if rest.startswith("$"):
        rest = rest[1:]
    parts: list[str | int] = []
    pos = 0
    while pos < len(rest):
        m = _PATH_TOKEN.match(rest, pos)
        if m is None or (m.group(2) is not None and pos > 0 and rest[pos] != "."):
            raise ConfigError(
                key,
                f"cannot read JSON path {text!r} at character {pos + 1}; write dotted keys and "
                "[index], e.g. data.items[0].id",
            )
        parts.append(int(m.group(1)) if m.group(1) is not None else m.group(2))
        pos = m.end()
    if not parts:
        raise ConfigError(key, f"JSON path {text!r} selects nothing; name a key, e.g. status")
    return JsonPath(text.strip(), tuple(parts))


def json_equal(a: object, b: object) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` equals ``1.0``, containers compare deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def substitute(text: str, *, colour: str, version: str, role: str) -> str:
    """Replace ``{colour}``, ``{version}`` and ``{role}`` (other braces are left alone)."""
    return text.replace("{colour}", colour).replace("{version}", version).replace("{role}", role)


def uses_version(text: str) -> bool:
    """Whether ``text`` needs the ``{version}`` placeholder."""
    return "{version}" in text


# =========================================================================== smoke


class CheckKind(StrEnum):
    """What a smoke check talks to."""

    HTTP = "http"
    SQL = "sql"
    COMMAND = "command"


class SmokeRole(StrEnum):
    """Why a colour is smoke-tested: it is the new version, or the live one re-checked."""

    TARGET = "target"
    LIVE = "live"


@dataclass(frozen=True, slots=True)
class HttpExpect:
    """What a smoke HTTP answer must look like. Every field must hold."""

    status: StatusRanges = SUCCESS
    body_contains: tuple[str, ...] = ()
    body_regex: tuple[re.Pattern[str], ...] = ()
    json: tuple[tuple[JsonPath, JSON], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # name (any case) -> exact value
    max_latency: float | None = None


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """One request sent to every server of the colour (each must pass)."""

    method: str = "GET"
    path: str = "/health"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    json_body: JSON = None
    has_json_body: bool = False
    timeout: float = 5.0
    repeat: int = 1
    expect: HttpExpect = HttpExpect()


@dataclass(frozen=True, slots=True)
class SqlCheck:
    """The seed's /health as a check: required tables/columns and a minimum migration."""

    require: tuple[str, ...] = ()
    min_version: int | None = None
    database_url: str | None = None  # default: smoke.database_url, then the runner's


@dataclass(frozen=True, slots=True)
class CommandCheck:
    """A command run without a shell; exit status 0 passes."""

    argv: tuple[str, ...]
    timeout: float = 60.0
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None


CheckSpec: TypeAlias = HttpCheck | SqlCheck | CommandCheck


@dataclass(frozen=True, slots=True)
class SmokeCheck:
    """A named smoke check."""

    name: str
    spec: CheckSpec

    @property
    def kind(self) -> CheckKind:
        """http, sql or command."""
        if isinstance(self.spec, HttpCheck):
            return CheckKind.HTTP
        if isinstance(self.spec, SqlCheck):
            return CheckKind.SQL
        return CheckKind.COMMAND


DEFAULT_CHECK_NAME: Final = "health"


@dataclass(frozen=True, slots=True)
class SmokeConfig:
    """The ``smoke:`` section."""

    checks: tuple[SmokeCheck, ...] = ()
    target: tuple[SmokeCheck, ...] = ()
    live: tuple[SmokeCheck, ...] = ()
    blue: tuple[SmokeCheck, ...] = ()
    green: tuple[SmokeCheck, ...] = ()
    timeout: float = 120.0
    database_url: str | None = None
    # With nothing configured for a colour and role: GET the probe path, expect 2xx
    # (the seed's `curl -f http://app-green:3000/health`).
    default_check: bool = True

    @property
    def configured(self) -> bool:
        """Whether any check is configured at all."""
        return bool(self.checks or self.target or self.live or self.blue or self.green)

    def checks_for(
        self, colour: Colour, role: SmokeRole, *, default_path: str = "/health"
    ) -> tuple[SmokeCheck, ...]:
        """The checks to run on ``colour`` in ``role``, in order: shared, role, colour."""
        chosen = (
            *self.checks,
            *(self.target if role is SmokeRole.TARGET else self.live),
            *(self.blue if colour is Colour.BLUE else self.green),
        )
        if chosen or not self.default_check:
            return chosen
        return (SmokeCheck(DEFAULT_CHECK_NAME, HttpCheck(path=default_path)),)


# =========================================================================== health


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """Active probes: one GET per server every ``interval``."""

    enabled: bool = True
    path: str = "/health"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    interval: float = 2.0
    timeout: float = 1.0
    expected_status: StatusRanges = HEALTHY_STATUS
    thresholds: ProbeThresholds = field(default_factory=ProbeThresholds)
    max_connections: int = 32
    first_probe_jitter: float | None = None  # None: up to one interval


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """The ``health:`` section: probes and the limits of automatic rollback."""

    probes: ProbeConfig = ProbeConfig()
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    analysis_enabled: bool = True
    analysis_interval: float = 5.0  # length of one analysis window


# =========================================================================== notifications


class WebhookKind(StrEnum):
    """The payload a webhook receives."""

    JSON = "json"
    SLACK = "slack"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One webhook. ``facts`` None: every fact."""

    name: str
    url: str
    kind: WebhookKind = WebhookKind.JSON
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0
    facts: frozenset[str] | None = None
    slack_blocks: bool = False

    def wants(self, fact: str) -> bool:
        """Whether this webhook is told about ``fact``."""
        return self.facts is None or fact in self.facts


@dataclass(frozen=True, slots=True)
class NotificationsConfig:
    """The ``notifications:`` section."""

    webhooks: tuple[WebhookConfig, ...] = ()
    queue_size: int = 1000  # per webhook; when full the oldest is dropped (and counted)
    retries: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    close_timeout: float = 5.0


# =========================================================================== preflight


class ItemMode(StrEnum):
    """How a preflight item counts: blocks the start, only warns, or is not run."""

    REQUIRED = "required"
    WARN = "warn"
    SKIP = "skip"


# The checklist, in display order, with what each item answers (the seed's questions).
PREFLIGHT_ITEMS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "migrations_history": "Applied migrations unchanged and no run left failed or unfinished",
        "migrations_lint": "Pending migrations lint clean (CONCURRENTLY, NOT NULL in phases, ...)",
        "migrations_reversible": (
            "Every pending migration reversible or marked irreversible on purpose"
        ),
        "expand_backward_compatible": "Expand and migrate migrations backward compatible",
        "health_checks_implemented": (
            "Health checks implemented (every server answers the probe path)"
        ),
        "colours_healthy": "Both colours healthy",
        "smoke_tests_configured": "Smoke tests configured for the new version",
        "automatic_rollback_configured": "Automatic rollback configured (health analysis enabled)",
        "monitoring_active": "Monitoring active (metrics endpoint reachable)",
        "notifications_configured": "Team notified (webhooks configured)",
        "backup_recent": "A recent backup exists (backup check command)",
        "state_store_writable": "State store writable",
    }
)
_WARN_BY_DEFAULT: Final = (
    "smoke_tests_configured",
    "monitoring_active",
    "notifications_configured",
)
DEFAULT_ITEM_MODES: Final[Mapping[str, ItemMode]] = MappingProxyType(
    {n: ItemMode.WARN if n in _WARN_BY_DEFAULT else ItemMode.REQUIRED for n in PREFLIGHT_ITEMS}
)


@dataclass(frozen=True, slots=True)
class AttestationConfig:
    """A checklist item no machine can check: an operator says it is done."""

    name: str
    description: str
    link: str | None = None
    required: bool = True


# The seed's checklist items that need a person; shown (not required) unless configured.
DEFAULT_ATTESTATIONS: Final = (
    AttestationConfig(
        "staging_tested", "Tested in staging with real data (production-sized)", required=False
    ),
    AttestationConfig("team_notified", "The team knows this rollout is happening", required=False),
    AttestationConfig("rollback_runbook", "The rollback runbook is ready", required=False),
)


@dataclass(frozen=True, slots=True)
class PreflightConfig:
    """The ``preflight:`` section."""

    timeout: float = 60.0
    metrics_url: str | None = None  # default: the admin API's /metrics (the runner passes it)
    backup_check: CommandCheck | None = None
    attestations: tuple[AttestationConfig, ...] = DEFAULT_ATTESTATIONS
    items: Mapping[str, ItemMode] = field(
        default_factory=lambda: MappingProxyType(dict(DEFAULT_ITEM_MODES))
    )

    def mode(self, item: str) -> ItemMode:
        """How ``item`` counts."""
        return self.items.get(item, DEFAULT_ITEM_MODES.get(item, ItemMode.REQUIRED))
