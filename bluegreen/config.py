"""Configuration: one YAML file, validated at load into frozen dataclasses.

Strings may use ``${VAR}`` and ``${VAR:-default}`` (``$${`` writes a literal
``${``). Every problem raises :class:`~bluegreen.errors.ConfigError` naming the
key path, e.g. ``upstreams.green.servers[0]: port 70000 out of range``.
Unknown keys are errors too: a typo must not silently fall back to a default.

Sections owned by later features (state, admin, health, rollout, ...) are
added here as typed dataclasses with their own ``_parse_<section>`` function.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from bluegreen.errors import ConfigError
from bluegreen.rollout_config import (
    HealthConfig,
    NotificationsConfig,
    PreflightConfig,
    SmokeConfig,
)
from bluegreen.routing import percent_to_bp

T = TypeVar("T")


# --------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class Address:
    """A host and TCP port (a listener or an upstream server)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """True for 127.0.0.0/8, ::1 and ``localhost``."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class ListenersConfig:
    """Where the proxy (and later the admin API) listen."""

    proxy: Address = Address("127.0.0.1", 8080)
    admin: Address = Address("127.0.0.1", 9900)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One colour's servers; several are balanced round-robin."""

    servers: tuple[Address, ...] = ()


@dataclass(frozen=True, slots=True)
class StickyConfig:
    """Where a request's sticky key comes from, tried in this order."""

    header: str | None = None
    cookie: str | None = None
    # The proxy's own cookie: read like ``cookie``; set on the first response
    # of a client that had no key.
    own_cookie: str | None = None
    own_cookie_max_age: float = 86_400.0

    @property
    def enabled(self) -> bool:
        """Whether any sticky key source is configured."""
        return bool(self.header or self.cookie or self.own_cookie)


@dataclass(frozen=True, slots=True)
class OverrideConfig:
    """Names of the header and cookie that pin a request to a colour."""

    header: str | None = "X-Bluegreen-Colour"
    cookie: str | None = "bluegreen_colour"


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """The traffic split."""

    green_weight_bp: int = 0
    salt: str = "bluegreen"
    sticky: StickyConfig = StickyConfig()
    override: OverrideConfig = OverrideConfig()
    mirror_bp: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """Timeouts in seconds; names follow nginx's meaning."""

    connect: float = 3.0
    upstream_read: float = 60.0
    upstream_idle: float = 30.0
    client_header: float = 30.0
    client_body: float = 60.0
    client_keepalive: float = 75.0
    # nginx send_timeout: a client that reads none of its response for this long is cut.
    client_send: float = 60.0
    drain: float = 30.0


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Size and concurrency bounds."""

    max_header_bytes: int = 32 * 1024
    max_body_bytes: int = 1024**3
    upstream_connections_per_server: int = 256
    upstream_queue_per_server: int = 1024


DEFAULT_RETRY_STATUSES = (502, 503, 504)


@dataclass(frozen=True, slots=True)
class RetriesConfig:
    """Answers an idempotent request is sent once more to the other colour for."""

    statuses: tuple[int, ...] = DEFAULT_RETRY_STATUSES


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    """One JSON line per request, to stdout (``-``) or a file."""

    enabled: bool = True
    path: str = "-"


DEFAULT_STATE_URL = "file:.bluegreen/state.json"
ADMIN_TOKEN_ENV = "BLUEGREEN_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token
MIN_ADMIN_TOKEN_CHARS = 16


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where the shared state lives and how this replica reports to it.

    ``url`` is ``file:PATH`` (relative paths from the working directory) or
    ``postgresql://...`` for several replicas. ``poll_interval`` None: the
    backend's default (0.1 s for a file, 1 s for PostgreSQL while LISTEN is down).
    """

    url: str = DEFAULT_STATE_URL
    replica_id: str | None = None
    heartbeat_interval: float = 2.0
    replica_expiry: float = 10.0
    poll_interval: float | None = None


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin API (its address is ``listeners.admin``)."""

    token: str | None = None
    max_body_bytes: int = 1024 * 1024
    event_heartbeat: float = 15.0
    max_event_streams: int = 64


@dataclass(frozen=True, slots=True)
class RolloutStepConfig:
    """One ramp step: the new colour's weight (basis points) and how long to bake it."""

    weight_bp: int
    bake: float


DEFAULT_ROLLOUT_STEPS = (
    RolloutStepConfig(1000, 60.0),
    RolloutStepConfig(5000, 60.0),
    RolloutStepConfig(10000, 60.0),
)


@dataclass(frozen=True, slots=True)
class RolloutMigrationsConfig:
    """The migrations a rollout runs (expand and migrate before traffic, contract after)."""

    directory: str | None = None  # None: the rollout runs no migrations
    database_url: str | None = None
    allow_hazards: tuple[str, ...] = ()
    lock_timeout: float = 2.0
    statement_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class RolloutConfig:
    """The ``rollout:`` section: the default ramp and the controller's timeouts."""

    steps: tuple[RolloutStepConfig, ...] = DEFAULT_ROLLOUT_STEPS
    confirm_timeout: float = 30.0  # every live replica must apply a weight within this
    drain_timeout: float = 120.0  # in-flight requests of a colour sent back to 0 %
    check_old_colour: bool = True  # re-run the live colour's smoke tests after migrations
    down_migrations_on_rollback: bool = False
    contract_grace: float = 86_400.0  # after the old colour drained, before contract
    auto_contract: bool = False
    leadership_retry: float = 2.0  # how often a standby controller tries to take over
    migrations: RolloutMigrationsConfig = RolloutMigrationsConfig()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    listeners: ListenersConfig = ListenersConfig()
    upstreams: Mapping[str, UpstreamConfig] = field(
        default_factory=lambda: {"blue": UpstreamConfig(), "green": UpstreamConfig()}
    )
    routing: RoutingConfig = RoutingConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    limits: LimitsConfig = LimitsConfig()
    retries: RetriesConfig = RetriesConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    state: StateConfig = StateConfig()
    admin: AdminConfig = AdminConfig()
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    rollout: RolloutConfig = RolloutConfig()
    # Proxy worker processes: "auto" (one per usable CPU, like nginx's
    # worker_processes auto) or N. More than one runs a control process and N
    # data-plane workers; 1 serves everything from the one process.
    workers: int | Literal["auto"] = "auto"
    source: str | None = None


# --------------------------------------------------------------------------- scalars

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
    "k": 1024, "K": 1024, "M": 1024**2, "G": 1024**3,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3,
}  # fmt: skip
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_COOKIE_NAME = _HEADER_NAME


def parse_duration(value: object, key: str) -> float:
    """Seconds from a number or a string like ``500ms``, ``30s``, ``2m``."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration like 30s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ConfigError(key, f'expected a duration like "30s" or "500ms", got {value!r}')
    if seconds < 0:
        raise ConfigError(key, f"duration must not be negative, got {value!r}")
    return seconds


def parse_size(value: object, key: str) -> int:
    """Bytes from an integer or a string like ``64KiB``, ``1MiB``."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a size like 64KiB, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ConfigError(key, f'expected a size like "64KiB" or "1MiB", got {value!r}')
    if size < 0:
        raise ConfigError(key, f"size must not be negative, got {value!r}")
    return size


def parse_int(value: object, key: str, *, minimum: int, maximum: int | None = None) -> int:
    """An integer within bounds (strings of digits from ``${VAR}`` are accepted)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(key, f"{value} out of range; use {bound}")
    return value


def parse_workers(value: object, key: str) -> int | Literal["auto"]:
    """``auto`` or a number of worker processes (1..1024)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return parse_int(value, key, minimum=1, maximum=1024)
    except ConfigError:
        raise ConfigError(key, f"expected a number of processes or auto, got {value!r}") from None


def parse_bool(value: object, key: str) -> bool:
    """A YAML boolean (or the strings true/false from ``${VAR}``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise ConfigError(key, f"expected true or false, got {value!r}")


def parse_str(value: object, key: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    return value


def parse_percent(value: object, key: str) -> int:
    """A weight in percent (0..100, 0.01 steps) as basis points."""
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%"))
        except ValueError:
            raise ConfigError(key, f"expected a percentage 0..100, got {value!r}") from None
    try:
        return percent_to_bp(value)  # type: ignore[arg-type]  # checked inside
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _parse_token_name(value: object, key: str, what: str) -> str | None:
    if value is None:
        return None
    text = parse_str(value, key)
    if not _HEADER_NAME.match(text):
        raise ConfigError(key, f"{text!r} is not a valid {what} name")
    return text


def parse_address(
    value: object, key: str, *, allow_scheme: bool = False, allow_port_zero: bool = False
) -> Address:
    """``host:port``, ``[v6]:port`` or (upstreams) ``http://host:port``.

    ``allow_port_zero``: port 0 (the system picks a free one) is accepted.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"127.0.0.1:{value}"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f'expected "host:port", got {value!r}')
    text = value.strip()
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if not allow_scheme:
            raise ConfigError(key, f'expected "host:port" without a scheme, got {value!r}')
        if scheme.lower() == "https":
            raise ConfigError(
                key,
                f"{value!r}: TLS to upstreams is not supported; "
                "point bluegreen at the app's plain-HTTP port",
            )
        if scheme.lower() != "http":
            raise ConfigError(key, f"expected an http:// URL, got {value!r}")
        text = rest.rstrip("/")
        if "/" in text:
            raise ConfigError(key, f"{value!r}: an upstream is a server, not a path; drop the path")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ConfigError(key, f'expected "[v6-address]:port", got {value!r}')
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(key, f'missing port: expected "host:port", got {value!r}')
    if not host:
        raise ConfigError(key, f'missing host: expected "host:port", got {value!r}')
    if not port_text.isdigit():
        raise ConfigError(key, f"port {port_text!r} is not a number")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port < 65536:
        raise ConfigError(key, f"port {port} out of range")
    return Address(host, port)


# --------------------------------------------------------------------------- structure


class _Section:
    """A mapping being read; remembers its path and rejects unknown keys."""

    def __init__(self, data: object, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a mapping, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.path = path
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        """Path of a child key."""
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        """Whether the key is present (even if null)."""
        return name in self.data

    def get(self, name: str, parse: Callable[[object, str], T], default: T) -> T:
        """Parse ``name`` with ``parse`` or return ``default`` when absent."""
        self._seen.add(name)
        if name not in self.data:
            return default
        return parse(self.data[name], self.key(name))

    def raw(self, name: str) -> object:
        """The unparsed value (None when absent)."""
        self._seen.add(name)
        return self.data.get(name)

    def section(self, name: str) -> _Section:
        """A nested mapping (empty when absent)."""
        self._seen.add(name)
        return _Section(self.data.get(name), self.key(name))

    def finish(self) -> None:
        """Fail on keys nobody asked for (typos)."""
        unknown = sorted(set(self.data) - self._seen, key=str)
        if unknown:
            known = ", ".join(sorted(self._seen)) or "none"
            raise ConfigError(self.key(str(unknown[0])), f"unknown key; known keys here: {known}")


def _parse_listeners(s: _Section) -> ListenersConfig:
    d = ListenersConfig()
    cfg = ListenersConfig(
        proxy=s.get("proxy", parse_address, d.proxy),
        admin=s.get("admin", lambda v, k: parse_address(v, k, allow_port_zero=True), d.admin),
    )
    s.finish()
    return cfg


def _parse_servers(value: object, key: str) -> tuple[Address, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(key, 'expected a list of servers like ["127.0.0.1:9001"]')
    return tuple(parse_address(v, f"{key}[{i}]", allow_scheme=True) for i, v in enumerate(value))


def _parse_upstreams(s: _Section) -> dict[str, UpstreamConfig]:
    result: dict[str, UpstreamConfig] = {}
    for colour in ("blue", "green"):
        cs = s.section(colour)
        result[colour] = UpstreamConfig(servers=cs.get("servers", _parse_servers, ()))
        cs.finish()
    s.finish()
    return result


def _parse_routing(s: _Section) -> RoutingConfig:
    d = RoutingConfig()
    sticky_s = s.section("sticky")
    sticky = StickyConfig(
        header=sticky_s.get("header", lambda v, k: _parse_token_name(v, k, "header"), None),
        cookie=sticky_s.get("cookie", lambda v, k: _parse_token_name(v, k, "cookie"), None),
        own_cookie=sticky_s.get("own_cookie", lambda v, k: _parse_token_name(v, k, "cookie"), None),
        own_cookie_max_age=sticky_s.get(
            "own_cookie_max_age", parse_duration, d.sticky.own_cookie_max_age
        ),
    )
    sticky_s.finish()
    override_s = s.section("override")
    override = OverrideConfig(
        header=override_s.get(
            "header", lambda v, k: _parse_token_name(v, k, "header"), d.override.header
        ),
        cookie=override_s.get(
            "cookie", lambda v, k: _parse_token_name(v, k, "cookie"), d.override.cookie
        ),
    )
    override_s.finish()
    cfg = RoutingConfig(
        green_weight_bp=s.get("green_weight", parse_percent, d.green_weight_bp),
        salt=s.get("salt", parse_str, d.salt),
        sticky=sticky,
        override=override,
        mirror_bp=s.get("mirror_percent", parse_percent, d.mirror_bp),
    )
    s.finish()
    return cfg


def _parse_timeouts(s: _Section) -> TimeoutsConfig:
    d = TimeoutsConfig()
    values = {
        f.name: s.get(f.name, parse_duration, getattr(d, f.name)) for f in dataclasses.fields(d)
    }
    s.finish()
    must_be_positive = (
        "connect",
        "upstream_read",
        "client_header",
        "client_body",
        "client_keepalive",
        "client_send",
    )
    for name in must_be_positive:
        if values[name] <= 0:
            raise ConfigError(s.key(name), "must be greater than 0")
    return TimeoutsConfig(**values)


def _parse_limits(s: _Section) -> LimitsConfig:
    d = LimitsConfig()
    cfg = LimitsConfig(
        max_header_bytes=s.get("max_header_bytes", parse_size, d.max_header_bytes),
        max_body_bytes=s.get("max_body_bytes", parse_size, d.max_body_bytes),
        upstream_connections_per_server=s.get(
            "upstream_connections_per_server",
            lambda v, k: parse_int(v, k, minimum=1, maximum=100_000),
            d.upstream_connections_per_server,
        ),
        upstream_queue_per_server=s.get(
            "upstream_queue_per_server",
            lambda v, k: parse_int(v, k, minimum=0, maximum=1_000_000),
            d.upstream_queue_per_server,
        ),
    )
    s.finish()
    if cfg.max_header_bytes < 1024:
        raise ConfigError(s.key("max_header_bytes"), "must be at least 1KiB")
    return cfg


def parse_retry_statuses(value: object, key: str) -> tuple[int, ...]:
    """A list of 5xx statuses (``[]``: none)."""
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of statuses like [502, 503, 504], got {value!r}")
    statuses: list[int] = []
    for i, item in enumerate(value):
        item_key = f"{key}[{i}]"
        try:
            status = parse_int(item, item_key, minimum=500, maximum=599)
        except ConfigError:
            raise ConfigError(item_key, f"expected a status 500..599, got {item!r}") from None
        if status in statuses:
            raise ConfigError(item_key, f"{status} is listed twice")
        statuses.append(status)
    return tuple(statuses)


def _parse_retries(s: _Section) -> RetriesConfig:
    cfg = RetriesConfig(statuses=s.get("statuses", parse_retry_statuses, DEFAULT_RETRY_STATUSES))
    s.finish()
    return cfg


def _parse_access_log(s: _Section) -> AccessLogConfig:
    d = AccessLogConfig()
    cfg = AccessLogConfig(
        enabled=s.get("enabled", parse_bool, d.enabled),
        path=s.get("path", parse_str, d.path),
    )
    s.finish()
    return cfg


_STATE_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def parse_state_url(value: object, key: str) -> str:
    """A state store URL: ``file:PATH``, a plain path or ``postgresql://...``."""
    text = parse_str(value, key).strip()
    lowered = text.lower()
    scheme = _STATE_SCHEME.match(text)
    if lowered.startswith(("postgresql://", "postgres://", "file:")) or scheme is None:
        if lowered in ("file:", "file://"):
            raise ConfigError(
                key, "a file state store needs a path, e.g. file:.bluegreen/state.json"
            )
        return text
    raise ConfigError(
        key,
        f"unsupported state store {scheme.group(1)!r}; use file:PATH or "
        "postgresql://USER@HOST:PORT/DATABASE",
    )


def parse_admin_token(value: object, key: str) -> str | None:
    """A bearer token (>= 16 characters, no whitespace); empty means none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(key, "expected a string")
    if len(value) < MIN_ADMIN_TOKEN_CHARS or any(ch.isspace() or ord(ch) < 33 for ch in value):
        # Never echo the value: it is a secret.
        raise ConfigError(
            key,
            f"the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} printable characters "
            "without spaces; generate one with `openssl rand -hex 32`",
        )
    return value


def _parse_state(s: _Section) -> StateConfig:
    from bluegreen.errors import InvalidFieldError
    from bluegreen.state.model import check_replica_id

    def replica_id(value: object, key: str) -> str | None:
        if value is None:
            return None
        try:
            return check_replica_id(value, key)
        except InvalidFieldError as exc:
            raise ConfigError(key, exc.problem) from None

    def positive(value: object, key: str) -> float:
        seconds = parse_duration(value, key)
        if seconds <= 0:
            raise ConfigError(key, "must be greater than 0")
        return seconds

    d = StateConfig()
    cfg = StateConfig(
        url=s.get("url", parse_state_url, d.url),
        replica_id=s.get("replica_id", replica_id, d.replica_id),
        heartbeat_interval=s.get("heartbeat_interval", positive, d.heartbeat_interval),
        replica_expiry=s.get("replica_expiry", positive, d.replica_expiry),
        poll_interval=s.get("poll_interval", positive, d.poll_interval),
    )
    s.finish()
    if cfg.replica_expiry <= 2 * cfg.heartbeat_interval:
        raise ConfigError(
            s.key("replica_expiry"),
            f"{cfg.replica_expiry:g}s is not more than two heartbeats "
            f"({cfg.heartbeat_interval:g}s each); one late heartbeat would count a replica dead",
        )
    return cfg


def _parse_admin(s: _Section) -> AdminConfig:
    d = AdminConfig()

    def heartbeat(value: object, key: str) -> float:
        seconds = parse_duration(value, key)
        if not 0 < seconds <= 300:
            raise ConfigError(key, "use a duration between 0 and 5m")
        return seconds

    cfg = AdminConfig(
        token=s.get("token", parse_admin_token, d.token),
        max_body_bytes=s.get("max_body_bytes", parse_size, d.max_body_bytes),
        event_heartbeat=s.get("event_heartbeat", heartbeat, d.event_heartbeat),
        max_event_streams=s.get(
            "max_event_streams",
            lambda v, k: parse_int(v, k, minimum=1, maximum=10_000),
            d.max_event_streams,
        ),
    )
    s.finish()
    if cfg.max_body_bytes < 1024:
        raise ConfigError(s.key("max_body_bytes"), "must be at least 1KiB")
    return cfg


def _parse_rollout_steps(value: object, key: str) -> tuple[RolloutStepConfig, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, "expected a list of steps like [{weight: 10, bake: 5m}, ...]")
    steps: list[RolloutStepConfig] = []
    for i, item in enumerate(value):
        s = _Section(item, f"{key}[{i}]")
        if not s.has("weight"):
            raise ConfigError(s.key("weight"), "missing; give the percent of traffic, e.g. 10")
        weight = s.get("weight", parse_percent, 0)
        if weight == 0:
            raise ConfigError(s.key("weight"), "a step must send some traffic (0.01..100)")
        if steps and weight <= steps[-1].weight_bp:
            raise ConfigError(
                s.key("weight"),
                f"{weight / 100:g} is not above the previous step's "
                f"{steps[-1].weight_bp / 100:g}: weights only go up during a rollout",
            )
        steps.append(RolloutStepConfig(weight, s.get("bake", parse_duration, 60.0)))
        s.finish()
    return tuple(steps)


def _parse_rollout(s: _Section) -> RolloutConfig:
    d = RolloutConfig()

    def positive(value: object, key: str) -> float:
        seconds = parse_duration(value, key)
        if seconds <= 0:
            raise ConfigError(key, "must be greater than 0")
        return seconds

    def optional_text(value: object, key: str) -> str | None:
        if value is None or value == "":
            return None  # e.g. ${DATABASE_URL:-} when the variable is unset
        return parse_str(value, key)

    def hazards(value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ConfigError(key, "expected a list of lint rule ids, e.g. [ban-drop-column]")
        return tuple(parse_str(v, f"{key}[{i}]") for i, v in enumerate(value))

    ms = s.section("migrations")
    dm = d.migrations
    migrations = RolloutMigrationsConfig(
        directory=ms.get("directory", optional_text, dm.directory),
        database_url=ms.get("database_url", optional_text, dm.database_url),
        allow_hazards=ms.get("allow_hazards", hazards, dm.allow_hazards),
        lock_timeout=ms.get("lock_timeout", positive, dm.lock_timeout),
        statement_timeout=ms.get("statement_timeout", parse_duration, dm.statement_timeout),
    )
    ms.finish()
    if migrations.database_url is not None and not migrations.database_url.lower().startswith(
        ("postgresql://", "postgres://")
    ):
        raise ConfigError(ms.key("database_url"), "expected postgresql://USER@HOST:PORT/DATABASE")
    cfg = RolloutConfig(
        steps=s.get("steps", _parse_rollout_steps, d.steps),
        confirm_timeout=s.get("confirm_timeout", positive, d.confirm_timeout),
        drain_timeout=s.get("drain_timeout", positive, d.drain_timeout),
        check_old_colour=s.get("check_old_colour", parse_bool, d.check_old_colour),
        down_migrations_on_rollback=s.get(
            "down_migrations_on_rollback", parse_bool, d.down_migrations_on_rollback
        ),
        contract_grace=s.get("contract_grace", parse_duration, d.contract_grace),
        auto_contract=s.get("auto_contract", parse_bool, d.auto_contract),
        leadership_retry=s.get("leadership_retry", positive, d.leadership_retry),
        migrations=migrations,
    )
    s.finish()
    return cfg


def parse_config(data: object, *, source: str | None = None) -> Config:
    """Validate an already-loaded (and interpolated) document into a Config."""
    # Imported here: these parsers use this module's helpers (_Section, parse_*).
    from bluegreen.rollout_config_parse import (
        parse_health,
        parse_notifications,
        parse_preflight,
        parse_smoke,
    )

    try:
        root = _Section(data, "")
        cfg = Config(
            listeners=_parse_listeners(root.section("listeners")),
            upstreams=_parse_upstreams(root.section("upstreams")),
            routing=_parse_routing(root.section("routing")),
            timeouts=_parse_timeouts(root.section("timeouts")),
            limits=_parse_limits(root.section("limits")),
            retries=_parse_retries(root.section("retries")),
            access_log=_parse_access_log(root.section("access_log")),
            state=_parse_state(root.section("state")),
            admin=_parse_admin(root.section("admin")),
            smoke=parse_smoke(root.raw("smoke"), root.key("smoke")),
            health=parse_health(root.raw("health"), root.key("health")),
            notifications=parse_notifications(root.raw("notifications"), root.key("notifications")),
            preflight=parse_preflight(root.raw("preflight"), root.key("preflight")),
            rollout=_parse_rollout(root.section("rollout")),
            workers=root.get("workers", parse_workers, "auto"),
            source=source,
        )
        root.finish()
    except ConfigError as exc:
        if exc.source is None and source is not None:
            raise ConfigError(exc.key, exc.problem, source=source) from None
        raise
    return cfg


# --------------------------------------------------------------------------- loading

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, key: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}``; ``$${`` is a literal ``${``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            key, f"environment variable {name} is not set; set it or write ${{{name}:-default}}"
        )

    return _VAR.sub(substitute, text)


def _interpolate_tree(node: object, path: str, env: Mapping[str, str]) -> object:
    if isinstance(node, str):
        return interpolate(node, path, env)
    if isinstance(node, list):
        return [_interpolate_tree(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {
            k: _interpolate_tree(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()
        }
    return node


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise ConfigError(str(key), f"duplicate key (line {line})")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a YAML config file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file: {exc.strerror}", source=source) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506  # a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.problem, source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {exc}", source=source) from None
    try:
        data = _interpolate_tree(data, "", os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.problem, source=source) from None
    return parse_config(data, source=source)


def with_overrides(
    cfg: Config,
    *,
    listen: str | None = None,
    blue: list[str] | None = None,
    green: list[str] | None = None,
    green_weight: str | float | None = None,
    state: str | None = None,
    admin: str | None = None,
    workers: str | None = None,
) -> Config:
    """Apply the quick-start command-line flags on top of a config."""
    listeners = cfg.listeners
    if listen is not None:
        listeners = dataclasses.replace(listeners, proxy=parse_address(listen, "--listen"))
    if admin is not None:
        listeners = dataclasses.replace(
            listeners, admin=parse_address(admin, "--admin", allow_port_zero=True)
        )
    state_cfg = cfg.state
    if state is not None:
        state_cfg = dataclasses.replace(state_cfg, url=parse_state_url(state, "--state"))
    upstreams = dict(cfg.upstreams)
    for colour, servers in (("blue", blue), ("green", green)):
        if servers:
            upstreams[colour] = UpstreamConfig(servers=_parse_servers(servers, f"--{colour}"))
    routing = cfg.routing
    if green_weight is not None:
        routing = dataclasses.replace(
            routing, green_weight_bp=parse_percent(green_weight, "--green-weight")
        )
    return dataclasses.replace(
        cfg,
        listeners=listeners,
        upstreams=upstreams,
        routing=routing,
        state=state_cfg,
        workers=cfg.workers if workers is None else parse_workers(workers, "--workers"),
    )


def with_admin_token(cfg: Config, env: Mapping[str, str], *, admin_key: str) -> Config:
    """Take the admin token from the environment when the config has none; check the listener.

    Refuses (ConfigError naming ``admin_key``: ``listeners.admin`` or
    ``--admin``) an admin listener on a non-loopback address without a token:
    anyone who can reach it could move all traffic.
    """
    token = cfg.admin.token
    if token is None:
        token = parse_admin_token(env.get(ADMIN_TOKEN_ENV), ADMIN_TOKEN_ENV)
    address = cfg.listeners.admin
    if token is None and not address.is_loopback:
        raise ConfigError(
            admin_key,
            f"the admin API would listen on {address}, which is not a loopback address, "
            f"without a token; set admin.token or {ADMIN_TOKEN_ENV}, or listen on 127.0.0.1",
            source=cfg.source,
        )
    return dataclasses.replace(cfg, admin=dataclasses.replace(cfg.admin, token=token))


def require_upstreams(cfg: Config) -> None:
    """Fail unless both colours have at least one server."""
    for colour in ("blue", "green"):
        if not cfg.upstreams[colour].servers:
            raise ConfigError(
                f"upstreams.{colour}.servers",
                f"no {colour} servers; list them in the config or pass --{colour} HOST:PORT",
                source=cfg.source,
            )
