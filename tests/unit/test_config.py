"""Configuration loading: interpolation, validation with key paths, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.config import (
    Address,
    Config,
    interpolate,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
    require_upstreams,
    with_overrides,
)
from bluegreen.errors import ConfigError
from tests.unit.config_files import assert_names_the_key, write

REPO = Path(__file__).resolve().parents[2]


def test_example_config_loads_as_is() -> None:
    cfg = load_config(REPO / "config" / "bluegreen.yaml", env={})
    assert cfg.listeners.proxy == Address("127.0.0.1", 8080)
    assert cfg.upstreams["blue"].servers == (Address("127.0.0.1", 9001),)
    assert cfg.upstreams["green"].servers == (Address("127.0.0.1", 9002),)
    assert cfg.routing.sticky.own_cookie == "bg_sticky"
    assert cfg.routing.sticky.own_cookie_max_age == 86_400
    require_upstreams(cfg)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={})
    assert cfg.timeouts.client_header <= 30
    assert cfg.timeouts.client_keepalive <= 75
    assert cfg.routing.green_weight_bp == 0
    assert cfg.source == str(tmp_path / "bluegreen.yaml")


def test_full_document_parses(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            """
listeners: {proxy: "0.0.0.0:80", admin: "[::1]:9900"}
upstreams:
  blue: {servers: ["http://10.0.0.1:3000", "10.0.0.2:3000"]}
  green: {servers: "10.0.0.3:3000"}
routing:
  green_weight: 12.5
  salt: s1
  sticky: {header: X-User-Id, cookie: sid}
  override: {header: null, cookie: pin}
  mirror_percent: "5%"
timeouts: {connect: 500ms, upstream_read: 2m, drain: 1h}
limits: {max_header_bytes: 16KiB, max_body_bytes: 10MB, upstream_connections_per_server: 8}
access_log: {enabled: false, path: /var/log/bg.log}
""",
        ),
        env={},
    )
    assert cfg.listeners.proxy == Address("0.0.0.0", 80)
    assert cfg.listeners.admin == Address("::1", 9900)
    assert str(cfg.listeners.admin) == "[::1]:9900"
    assert [str(a) for a in cfg.upstreams["blue"].servers] == ["10.0.0.1:3000", "10.0.0.2:3000"]
    assert cfg.upstreams["green"].servers == (Address("10.0.0.3", 3000),)
    assert cfg.routing.green_weight_bp == 1250
    assert cfg.routing.mirror_bp == 500
    assert cfg.routing.sticky.header == "X-User-Id"
    assert cfg.routing.override.header is None
    assert cfg.routing.override.cookie == "pin"
    assert cfg.timeouts.connect == 0.5
    assert cfg.timeouts.upstream_read == 120
    assert cfg.timeouts.drain == 3600
    assert cfg.limits.max_header_bytes == 16 * 1024
    assert cfg.limits.max_body_bytes == 10_000_000
    assert cfg.access_log.enabled is False


@pytest.mark.parametrize(
    ("yaml_text", "key", "problem"),
    [
        (
            "upstreams: {green: {servers: ['127.0.0.1:70000']}}",
            "upstreams.green.servers[0]",
            "port 70000 out of range",
        ),
        (
            "upstreams: {green: {servers: ['localhost']}}",
            "upstreams.green.servers[0]",
            "missing port",
        ),
        (
            "upstreams: {blue: {servers: ['https://a:443']}}",
            "upstreams.blue.servers[0]",
            "TLS to upstreams is not supported",
        ),
        ("upstreams: {blue: {servers: []}}", "upstreams.blue.servers", "expected a list"),
        ("upstreams: {purple: {}}", "upstreams.purple", "unknown key"),
        ("routing: {green_weight: 101}", "routing.green_weight", "out of range"),
        ("routing: {green_weight: 10.001}", "routing.green_weight", "0.01 % resolution"),
        ("routing: {green_weight: lots}", "routing.green_weight", "expected a percentage"),
        ("routing: {sticky: {header: 'bad header'}}", "routing.sticky.header", "not a valid"),
        ("timeouts: {connect: soon}", "timeouts.connect", "expected a duration"),
        ("timeouts: {connect: 0}", "timeouts.connect", "greater than 0"),
        ("limits: {max_header_bytes: 10}", "limits.max_header_bytes", "at least 1KiB"),
        ("limits: {max_body_bytes: huge}", "limits.max_body_bytes", "expected a size"),
        (
            "limits: {upstream_connections_per_server: 0}",
            "limits.upstream_connections_per_server",
            "out of range",
        ),
        ("access_log: {enabled: maybe}", "access_log.enabled", "expected true or false"),
        ("listeners: {proxy: 'http://127.0.0.1:80'}", "listeners.proxy", "without a scheme"),
        ("listener: {proxy: '127.0.0.1:80'}", "listener", "unknown key"),
        ("timeouts: {conect: 1s}", "timeouts.conect", "unknown key"),
        ("timeouts: [1, 2]", "timeouts", "expected a mapping"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_bad_values_name_the_key_path(
    tmp_path: Path, yaml_text: str, key: str, problem: str
) -> None:
    assert_names_the_key(tmp_path, yaml_text, key, problem)


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"duplicate key \(line 3\)"):
        load_config(write(tmp_path, "routing:\n  green_weight: 1\n  green_weight: 2\n"), env={})


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "routing: {green_weight: [\n"), env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", env={})


def test_interpolation_from_environment(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "listeners: {proxy: '${HOST:-127.0.0.1}:${PORT}'}\n"
            "routing: {salt: 'pre-$${literal}-${SALT}'}\n",
        ),
        env={"PORT": "8181", "SALT": "xyz"},
    )
    assert cfg.listeners.proxy == Address("127.0.0.1", 8181)
    assert cfg.routing.salt == "pre-${literal}-xyz"


def test_missing_variable_names_key_and_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "routing: {salt: '${NOPE}'}\n"), env={})
    assert info.value.key == "routing.salt"
    assert "NOPE is not set" in info.value.problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [("${A}", "1"), ("${A:-x}", "1"), ("${B:-x}", "x"), ("${B:-}", ""), ("a$${A}", "a${A}")],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, "k", {"A": "1", "B": ""}) == expected


@pytest.mark.parametrize(
    ("value", "seconds"), [(5, 5.0), (0.25, 0.25), ("500ms", 0.5), ("2m", 120.0), ("1.5s", 1.5)]
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, "k") == seconds


@pytest.mark.parametrize(("value", "size"), [(10, 10), ("1KiB", 1024), ("2MiB", 2 * 1024**2)])
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value, "k") == size


def test_overrides_replace_listen_upstreams_and_weight() -> None:
    cfg = with_overrides(
        Config(),
        listen="127.0.0.1:8181",
        blue=["127.0.0.1:9001", "127.0.0.1:9003"],
        green=["127.0.0.1:9002"],
        green_weight="10",
    )
    assert cfg.listeners.proxy.port == 8181
    assert len(cfg.upstreams["blue"].servers) == 2
    assert cfg.routing.green_weight_bp == 1000
    require_upstreams(cfg)


def test_override_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), blue=["127.0.0.1:99999"])
    assert info.value.key == "--blue[0]"
    with pytest.raises(ConfigError, match="--green-weight: weight 150 out of range"):
        with_overrides(Config(), green_weight="150")


def test_require_upstreams_says_how_to_fix() -> None:
    with pytest.raises(ConfigError, match="pass --blue HOST:PORT"):
        require_upstreams(parse_config({}))
