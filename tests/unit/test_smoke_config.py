"""The smoke: section: parsing, check selection by colour and role, JSON paths, statuses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bluegreen.errors import ConfigError
from bluegreen.rollout_config import (
    CheckKind,
    CommandCheck,
    HttpCheck,
    SmokeConfig,
    SmokeRole,
    SqlCheck,
    json_equal,
    parse_json_path,
    parse_status_ranges,
    substitute,
)
from bluegreen.rollout_config_parse import parse_smoke
from bluegreen.routing import Colour


def names(cfg: SmokeConfig, colour: Colour, role: SmokeRole) -> list[str]:
    return [c.name for c in cfg.checks_for(colour, role)]


# --------------------------------------------------------------------------- statuses


@pytest.mark.parametrize(
    ("value", "inside", "outside", "text"),
    [
        (200, [200], [201, 503], "200"),
        ("2xx", [200, 250, 299], [199, 300], "2xx"),
        ("200-399", [200, 302, 399], [400], "200-399"),
        ([200, 204], [200, 204], [201], "200 or 204"),
        (["2xx", 404], [204, 404], [500], "2xx or 404"),
    ],
    ids=["single", "class", "range", "list", "mixed"],
)
def test_status_ranges(value: object, inside: list[int], outside: list[int], text: str) -> None:
    ranges = parse_status_ranges(value, "k")
    assert all(s in ranges for s in inside)
    assert not any(s in ranges for s in outside)
    assert str(ranges) == text


@pytest.mark.parametrize("value", ["ok", 99, 600, "300-200", [], True, "6xx"], ids=str)
def test_bad_status_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^smoke\.x"):
        parse_status_ranges(value, "smoke.x")


# --------------------------------------------------------------------------- JSON paths


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("status", ("status",)),
        ("$.status", ("status",)),
        ("checks[0].ok", ("checks", 0, "ok")),
        ("[1].id", (1, "id")),
        ("$[0]", (0,)),
        ("a.b.c", ("a", "b", "c")),
        ("items[-1]", ("items", -1)),
    ],
    ids=lambda v: str(v),
)
def test_json_path_parses(text: str, parts: tuple[object, ...]) -> None:
    assert parse_json_path(text, "k").parts == parts


@pytest.mark.parametrize("text", ["", "a..b", "a[x]", "a[0", "$", "a]"], ids=repr)
def test_bad_json_path_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="JSON path"):
        parse_json_path(text, "k")


def test_json_path_lookup_says_where_it_stopped() -> None:
    doc = {"checks": [{"ok": True}], "status": "healthy"}
    assert parse_json_path("checks[0].ok", "k").lookup(doc) == (True, True, "")
    found, _, problem = parse_json_path("checks[3].ok", "k").lookup(doc)
    assert not found
    assert problem == "$.checks has 1 item(s); no index 3"
    assert (
        parse_json_path("status.code", "k").lookup(doc)[2] == "$.status is a string, not an object"
    )
    assert parse_json_path("nope", "k").lookup(doc)[2] == "$ has no key 'nope'"


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (True, True, True),
        (True, 1, False),
        (1, 1.0, True),
        (0, False, False),
        ("1", 1, False),
        (None, None, True),
        ([1, {"a": True}], [1.0, {"a": True}], True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
    ],
    ids=repr,
)
def test_json_equal_is_json_not_python_equality(a: object, b: object, equal: bool) -> None:
    assert json_equal(a, b) is equal


def test_substitute_replaces_only_known_placeholders() -> None:
    text = substitute(
        "/v/{version}/{colour}?r={role}&x={other}\\d{3}",
        colour="green",
        version="2.0",
        role="target",
    )
    assert text == "/v/2.0/green?r=target&x={other}\\d{3}"


# --------------------------------------------------------------------------- parsing


FULL = {
    "timeout": "45s",
    "database_url": "postgresql://app@db/app",
    "checks": [
        {
            "name": "health",
            "http": {
                "path": "/health",
                "expect": {
                    "status": 200,
                    "json": {"status": "healthy", "checks[0].ok": True},
                    "body_contains": "{version}",
                    "body_regex": ["v\\d+"],
                    "headers": {"Content-Type": "application/json"},
                    "max_latency": "500ms",
                },
            },
        },
        {"name": "home", "http": "/"},
    ],
    "target": [
        {
            "name": "create-order",
            "http": {
                "method": "post",
                "path": "/orders",
                "headers": {"X-Smoke": 1},
                "json": {"status": "pending"},
                "repeat": 3,
                "timeout": "2s",
                "expect": {"status": [200, 201]},
            },
        },
        {"name": "schema", "sql": {"require": ["orders.status_code"], "min_version": 3}},
    ],
    "live": [{"name": "old-schema", "sql": {"require": ["orders.status"]}}],
    "green": [{"name": "script", "command": "./smoke.sh --colour {colour}"}],
    "blue": [
        {
            "name": "script",
            "command": {
                "argv": ["./smoke.sh"],
                "timeout": "10s",
                "env": {"A": 1},
                "cwd": "/srv/app",
            },
        }
    ],
}


def test_full_section_parses() -> None:
    cfg = parse_smoke(FULL, "smoke")
    assert cfg.timeout == 45
    assert cfg.database_url == "postgresql://app@db/app"
    health = cfg.checks[0].spec
    assert isinstance(health, HttpCheck)
    assert health.expect.max_latency == 0.5
    assert [p.text for p, _ in health.expect.json] == ["status", "checks[0].ok"]
    assert health.expect.body_contains == ("{version}",)
    home = cfg.checks[1].spec
    assert isinstance(home, HttpCheck)
    assert (home.method, home.path) == ("GET", "/")
    order = cfg.target[0].spec
    assert isinstance(order, HttpCheck)
    assert order.method == "POST"
    assert order.headers == (("X-Smoke", "1"),)
    assert order.has_json_body
    assert order.json_body == {"status": "pending"}
    assert order.repeat == 3
    assert cfg.target[1].kind is CheckKind.SQL
    assert isinstance(cfg.target[1].spec, SqlCheck)
    assert cfg.target[1].spec.min_version == 3
    script = cfg.green[0].spec
    assert isinstance(script, CommandCheck)
    assert script.argv == ("./smoke.sh", "--colour", "{colour}")
    blue_script = cfg.blue[0].spec
    assert isinstance(blue_script, CommandCheck)
    assert (blue_script.timeout, blue_script.env) == (10, (("A", "1"),))
    assert blue_script.cwd == "/srv/app"


def test_checks_are_chosen_by_role_then_colour() -> None:
    cfg = parse_smoke(FULL, "smoke")
    assert names(cfg, Colour.GREEN, SmokeRole.TARGET) == [
        "health", "home", "create-order", "schema", "script",
    ]  # fmt: skip
    assert names(cfg, Colour.BLUE, SmokeRole.LIVE) == ["health", "home", "old-schema", "script"]
    assert names(cfg, Colour.BLUE, SmokeRole.TARGET)[-1] == "script"


def test_nothing_configured_gives_the_default_health_check() -> None:
    cfg = parse_smoke(None, "smoke")
    assert not cfg.configured
    (check,) = cfg.checks_for(Colour.GREEN, SmokeRole.TARGET, default_path="/healthz")
    assert check.name == "health"
    assert isinstance(check.spec, HttpCheck)
    assert check.spec.path == "/healthz"
    assert check.spec.expect.status.ranges == ((200, 299),)


def test_default_check_can_be_turned_off() -> None:
    cfg = parse_smoke({"default_check": False}, "smoke")
    assert cfg.checks_for(Colour.GREEN, SmokeRole.TARGET) == ()


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"checks": [{"http": "/x"}]}, "smoke.checks[0].name", "needs a name"),
        ({"checks": [{"name": "a"}]}, "smoke.checks[0]", "exactly one of http, sql or command"),
        (
            {"checks": [{"name": "a", "http": "/", "sql": {"min_version": 1}}]},
            "smoke.checks[0]",
            "found http, sql",
        ),
        ({"checks": [{"name": "a", "http": "health"}]}, "smoke.checks[0].http", "request path"),
        (
            {"checks": [{"name": "a", "http": {"expect": {"status": "ok"}}}]},
            "smoke.checks[0].http.expect.status",
            "expected a status",
        ),
        (
            {"checks": [{"name": "a", "http": {"expect": {"json": {"a[": 1}}}}]},
            "smoke.checks[0].http.expect.json.a[",
            "JSON path",
        ),
        (
            {"checks": [{"name": "a", "http": {"expect": {"body_regex": "("}}}]},
            "smoke.checks[0].http.expect.body_regex[0]",
            "invalid regex",
        ),
        (
            {"checks": [{"name": "a", "http": {"body": "x", "json": {}}}]},
            "smoke.checks[0].http.json",
            "not both",
        ),
        (
            {"checks": [{"name": "a", "http": {"pth": "/"}}]},
            "smoke.checks[0].http.pth",
            "unknown key",
        ),
        ({"checks": [{"name": "a", "sql": {}}]}, "smoke.checks[0].sql", "require"),
        (
            {"checks": [{"name": "a", "sql": {"require": ["a.b.c.d"]}}]},
            "smoke.checks[0].sql.require[0]",
            "TABLE.COLUMN",
        ),
        ({"checks": [{"name": "a", "command": []}]}, "smoke.checks[0].command", "empty"),
        (
            {"checks": [{"name": "a", "command": {"timeout": "1s"}}]},
            "smoke.checks[0].command.argv",
            "missing",
        ),
        (
            {"checks": [{"name": "a", "http": {"headers": {"Bad Name": "x"}}}]},
            "smoke.checks[0].http.headers.Bad Name",
            "header name",
        ),
        ({"checks": [{"name": "a b", "http": "/"}]}, "smoke.checks[0].name", "letters"),
        ({"checks": {"name": "a"}}, "smoke.checks", "list of checks"),
        ({"timeout": 0}, "smoke.timeout", "greater than 0"),
        ({"chekcs": []}, "smoke.chekcs", "unknown key"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_mistakes_name_the_key(data: object, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_smoke(data, "smoke")
    assert info.value.key == key
    assert message in info.value.problem


def test_duplicate_names_for_one_colour_and_role_are_refused() -> None:
    data = {"checks": [{"name": "a", "http": "/"}], "target": [{"name": "a", "http": "/x"}]}
    with pytest.raises(ConfigError, match="'a' is used twice for blue as target"):
        parse_smoke(data, "smoke")


def test_the_same_name_per_colour_is_fine() -> None:
    data = {"blue": [{"name": "a", "http": "/b"}], "green": [{"name": "a", "http": "/g"}]}
    cfg = parse_smoke(data, "smoke")
    assert names(cfg, Colour.BLUE, SmokeRole.TARGET) == ["a"]


def test_the_value_modules_load_no_io_library() -> None:
    code = (
        "import json, sys\n"
        "import bluegreen.rollout_config, bluegreen.rollout_config_parse, bluegreen.config\n"
        "print(json.dumps([m for m in ('aiohttp', 'asyncpg') if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
