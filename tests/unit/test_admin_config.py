"""The ``state:`` and ``admin:`` config sections, the admin token rules, the CLI's helpers."""

from __future__ import annotations

import pytest

from bluegreen.admin_client import DEFAULT_URL, AdminClient
from bluegreen.cli.control_cmd import parse_duration, parse_percent, render_status
from bluegreen.config import (
    DEFAULT_STATE_URL,
    Address,
    parse_config,
    with_admin_token,
    with_overrides,
)
from bluegreen.errors import AdminUnreachableError, ConfigError, UsageError

TOKEN = "0123456789abcdef0123"  # noqa: S105 - a test token


def test_defaults() -> None:
    cfg = parse_config({})
    assert cfg.state.url == DEFAULT_STATE_URL == "file:.bluegreen/state.json"
    assert cfg.admin.token is None
    assert cfg.listeners.admin == Address("127.0.0.1", 9900)


def test_state_and_admin_sections() -> None:
    cfg = parse_config(
        {
            "state": {
                "url": "postgresql://bg@db/bluegreen",
                "replica_id": "proxy-1",
                "heartbeat_interval": "1s",
                "replica_expiry": "5s",
                "poll_interval": "500ms",
            },
            "admin": {"token": TOKEN, "max_body_bytes": "64KiB", "event_heartbeat": "5s"},
            "listeners": {"admin": "127.0.0.1:0"},
        }
    )
    assert cfg.state.url == "postgresql://bg@db/bluegreen"
    assert cfg.state.replica_id == "proxy-1"
    assert (cfg.state.heartbeat_interval, cfg.state.replica_expiry) == (1.0, 5.0)
    assert cfg.state.poll_interval == 0.5
    assert cfg.admin.token == TOKEN
    assert cfg.admin.max_body_bytes == 64 * 1024
    assert cfg.listeners.admin.port == 0


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"state": {"url": "redis://x"}}, "state.url"),
        ({"state": {"url": "file:"}}, "state.url"),
        ({"state": {"replica_id": "has space"}}, "state.replica_id"),
        ({"state": {"heartbeat_interval": "0s"}}, "state.heartbeat_interval"),
        ({"state": {"heartbeat_interval": "5s", "replica_expiry": "10s"}}, "state.replica_expiry"),
        ({"state": {"urll": "x"}}, "state.urll"),
        ({"admin": {"token": "short"}}, "admin.token"),
        ({"admin": {"token": "has a space in it 0123"}}, "admin.token"),
        ({"admin": {"max_body_bytes": 10}}, "admin.max_body_bytes"),
        ({"admin": {"listen": "0.0.0.0:1"}}, "admin.listen"),
    ],
    ids=[
        "unknown-scheme", "empty-path", "bad-replica-id", "zero-heartbeat", "expiry-too-short",
        "typo", "short-token", "token-with-space", "tiny-body", "listen-is-under-listeners",
    ],
)  # fmt: skip
def test_bad_values_name_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(section)
    assert caught.value.key == key


def test_token_errors_never_echo_the_token() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"admin": {"token": "hunter2"}})
    assert "hunter2" not in str(caught.value)


def test_an_empty_token_from_interpolation_means_none() -> None:
    assert parse_config({"admin": {"token": ""}}).admin.token is None


def test_token_comes_from_the_environment_when_the_config_has_none() -> None:
    cfg = with_admin_token(parse_config({}), {"BLUEGREEN_ADMIN_TOKEN": TOKEN}, admin_key="x")
    assert cfg.admin.token == TOKEN


def test_the_configs_token_wins_over_the_environment() -> None:
    cfg = parse_config({"admin": {"token": TOKEN}})
    env = {"BLUEGREEN_ADMIN_TOKEN": "other-token-0123456789"}
    assert with_admin_token(cfg, env, admin_key="x").admin.token == TOKEN


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "[::]", "example.com"])
def test_a_public_admin_listener_needs_a_token(host: str) -> None:
    cfg = with_overrides(parse_config({}), admin=f"{host}:9900")
    with pytest.raises(ConfigError) as caught:
        with_admin_token(cfg, {}, admin_key="--admin")
    assert caught.value.key == "--admin"
    assert "BLUEGREEN_ADMIN_TOKEN" in str(caught.value)
    with_admin_token(cfg, {"BLUEGREEN_ADMIN_TOKEN": TOKEN}, admin_key="--admin")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "localhost", "[::1]"])
def test_a_loopback_admin_listener_may_run_without_a_token(host: str) -> None:
    cfg = with_overrides(parse_config({}), admin=f"{host}:9900")
    assert with_admin_token(cfg, {}, admin_key="--admin").admin.token is None


def test_state_override_from_the_command_line() -> None:
    cfg = with_overrides(parse_config({}), state="postgresql://db/x")
    assert cfg.state.url == "postgresql://db/x"
    with pytest.raises(ConfigError) as caught:
        with_overrides(parse_config({}), state="mysql://db/x")
    assert caught.value.key == "--state"


# --------------------------------------------------------------------------- client and CLI helpers


@pytest.mark.parametrize(
    "url", ["ftp://x", "127.0.0.1:9900", "http://", "http://host:99999", "not a url"]
)
def test_unusable_admin_urls(url: str) -> None:
    with pytest.raises(AdminUnreachableError):
        AdminClient(url)


def test_client_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLUEGREEN_ADMIN_URL", raising=False)
    monkeypatch.setenv("BLUEGREEN_ADMIN_TOKEN", TOKEN)
    client = AdminClient.from_env()
    assert client.url == DEFAULT_URL
    assert client.token == TOKEN
    monkeypatch.setenv("BLUEGREEN_ADMIN_URL", "http://10.1.2.3:1234/prefix/")
    client = AdminClient.from_env(token="")
    assert client.url == "http://10.1.2.3:1234/prefix"
    assert client.token is None


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("500ms", 0.5), ("2m", 120), ("7", 7)])
def test_cli_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--wait") == seconds


@pytest.mark.parametrize("text", ["forever", "10h", "301", "-1s"])
def test_bad_cli_durations(text: str) -> None:
    with pytest.raises(UsageError, match="--wait"):
        parse_duration(text, "--wait")


@pytest.mark.parametrize(("text", "value"), [("10", 10.0), ("12.5%", 12.5), ("0", 0.0)])
def test_cli_percent(text: str, value: float) -> None:
    assert parse_percent(text, "--green") == value


@pytest.mark.parametrize("text", ["101", "ten", "1.001", ""])
def test_bad_cli_percent(text: str) -> None:
    with pytest.raises(UsageError, match="--green"):
        parse_percent(text, "--green")


def test_status_text_shows_each_part() -> None:
    colour = {
        "rate_per_second": 12.34, "error_ratio": 0.0123, "p50_seconds": 0.005,
        "p99_seconds": None, "in_flight": 2,
    }  # fmt: skip
    status = {
        "admin_url": "http://127.0.0.1:9900",
        "version": 42,
        "weights": {
            "blue": 90.0,
            "green": 10.0,
            "mirror": 0.0,
            "live": "blue",
            "updated_at": "2024-05-01T12:00:00.000Z",
            "updated_by": "ops",
        },
        "flags": [{"name": "beta", "percent": 5.0}],
        "rollout": None,
        "replicas": {
            "replicas": [
                {
                    "id": "a",
                    "applied_version": 42,
                    "alive": True,
                    "stopped": False,
                    "age_seconds": 0.4,
                    "listen": "127.0.0.1:8080",
                },
            ],
            "summary": "all 1 live replica run version 42",
        },
        "stats": {
            "window_seconds": 10,
            "replica": "a",
            "colours": {"blue": colour, "green": colour},
        },
    }
    text = render_status(status)
    assert "weights: blue 90% / green 10%" in text
    assert "12.3/s" in text
    assert "1.23%" in text
    assert "5ms" in text
    assert "all 1 live replica run version 42" in text
    assert "flags: beta 5%" in text
