"""What operators type: API bodies, CLI steps and durations, the config's rollout section."""

from __future__ import annotations

import pytest

from bluegreen.admin_rollout import (
    parse_attestations,
    parse_bake,
    parse_options,
    parse_steps,
    parse_version,
)
from bluegreen.cli.rollout_cmd import outcome_lines, parse_duration, parse_step, render_preflight
from bluegreen.config import load_config, parse_config
from bluegreen.controller.executors import ControllerSettings
from bluegreen.controller.machine import RolloutOptions, Step
from bluegreen.errors import ConfigError, InvalidFieldError, UsageError


def test_steps_get_a_final_100_percent_step() -> None:
    steps = parse_steps([{"weight": 10, "bake": "30s"}, {"weight": 50.5, "bake": 90}])
    assert steps == (Step(1000, 30.0), Step(5050, 90.0), Step(10000, 0.0))


@pytest.mark.parametrize(
    ("steps", "field", "problem"),
    [
        ([], "steps", "non-empty"),
        ([{"weight": 50, "bake": 1}, {"weight": 10, "bake": 1}], "steps", "weights only go up"),
        ([{"weight": 0, "bake": 1}], "steps[0].weight", "some traffic"),
        ([{"weight": 10}], "steps[0].bake", "missing"),
        ([{"weight": 10, "bake": "soon"}], "steps[0].bake", "duration"),
        ([{"weight": 10, "bake": 1, "x": 1}], "steps[0].x", "unknown"),
        ([{"weight": 10.001, "bake": 1}], "steps[0].weight", "0.01"),
    ],
    ids=["empty", "decreasing", "zero", "no-bake", "bad-bake", "unknown-key", "too-fine"],
)
def test_bad_steps_name_the_field(steps: list[object], field: str, problem: str) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        parse_steps(steps)
    assert caught.value.field == field
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("2m", 120.0), ("1.5h", 5400.0), (7, 7.0), ("3", 3.0)]
)
def test_bake_durations(text: object, seconds: float) -> None:
    assert parse_bake(text, "bake") == seconds


def test_versions_are_printable_ascii() -> None:
    assert parse_version("v2.3.1-rc1") == "v2.3.1-rc1"
    for bad in ("", " v2", "v2\n", "vé", 7):
        with pytest.raises(InvalidFieldError):
            parse_version(bad)


def test_options_override_the_defaults() -> None:
    options = parse_options({"drain_timeout_seconds": 5, "auto_contract": True}, RolloutOptions())
    assert options.drain_timeout_seconds == 5.0
    assert options.auto_contract is True
    assert options.confirm_timeout_seconds == RolloutOptions().confirm_timeout_seconds
    with pytest.raises(InvalidFieldError, match="unknown option"):
        parse_options({"speed": 1}, RolloutOptions())
    with pytest.raises(InvalidFieldError, match="out of range"):
        parse_options({"confirm_timeout_seconds": 0}, RolloutOptions())


def test_attestations_must_be_configured_and_distinct() -> None:
    found = parse_attestations(["a"], ("a", "b"), "alice", 1.0)
    assert [(x.name, x.by) for x in found] == [("a", "alice")]
    with pytest.raises(InvalidFieldError, match="unknown attestation"):
        parse_attestations(["c"], ("a", "b"), "alice", 1.0)
    with pytest.raises(InvalidFieldError, match="twice"):
        parse_attestations(["a", "a"], ("a",), "alice", 1.0)


def test_cli_steps_and_durations() -> None:
    assert parse_step("10:30s") == {"weight": 10.0, "bake": 30.0}
    assert parse_step("50%:5m") == {"weight": 50.0, "bake": 300.0}
    for bad in ("10", "0:1s", "x:1s", "10:soon"):
        with pytest.raises(UsageError):
            parse_step(bad)
    assert parse_duration("2h", "--wait") == 7200.0


def test_cli_outcome_names_reason_and_detection_time() -> None:
    view = {
        "phase": "rolled_back",
        "summary": "s",
        "detection_seconds": 0.6,
        "fallback_seconds": 0.66,
        "rollout": {
            "target": "green",
            "failure": {"message": "green error rate 50 %", "code": "error_rate"},
            "fallback": {"failing_since": 1.0},
        },
    }
    lines = outcome_lines(view)
    assert lines[0] == "rolled_back: green error rate 50 % (reason: error_rate)"
    assert "600 ms from the first failing measurement" in lines[1]
    assert "660 ms to 0 % on every replica" in lines[1]


def test_cli_preflight_marks() -> None:
    report = {
        "ok": False,
        "version": "v2",
        "target": "green",
        "items": [
            {"name": "colours_healthy", "ok": True, "required": True, "reason": "fine"},
            {"name": "migrations_lint", "ok": False, "required": True, "reason": "2 hazards"},
            {"name": "monitoring_active", "ok": False, "required": False, "reason": "no"},
            {
                "name": "backup_recent",
                "ok": True,
                "required": False,
                "skipped": True,
                "reason": "-",
            },
        ],
    }
    text = render_preflight(report)
    assert "✓ colours_healthy" in text
    assert "✗ migrations_lint" in text
    assert "! monitoring_active  warning: no" in text
    assert "- backup_recent" in text
    assert text.endswith("preflight failed: migrations_lint")


def test_config_rollout_section_becomes_controller_settings() -> None:
    config = parse_config(
        {
            "upstreams": {
                "blue": {"servers": ["127.0.0.1:1"]},
                "green": {"servers": ["127.0.0.1:2"]},
            },
            "rollout": {
                "steps": [{"weight": 25, "bake": "10s"}, {"weight": 100, "bake": "1m"}],
                "confirm_timeout": "5s",
                "down_migrations_on_rollback": True,
                "contract_grace": "1h",
                "migrations": {
                    "directory": "migrations",
                    "database_url": "postgresql://u@h/db",
                    "allow_hazards": ["ban-drop-column"],
                },
            },
        }
    )
    settings = ControllerSettings.from_config(config)
    assert settings.steps == (Step(2500, 10.0), Step(10000, 60.0))
    assert settings.options.confirm_timeout_seconds == 5.0
    assert settings.options.down_migrations_on_rollback is True
    assert settings.options.contract_grace_seconds == 3600.0
    assert settings.migrations_configured
    assert settings.allow_hazards == frozenset({"ban-drop-column"})
    assert settings.servers["green"] == ("127.0.0.1:2",)  # type: ignore[index]


@pytest.mark.parametrize(
    ("rollout", "key"),
    [
        ({"steps": [{"weight": 50}, {"weight": 10}]}, "rollout.steps[1].weight"),
        ({"steps": [{"bake": "1s"}]}, "rollout.steps[0].weight"),
        ({"confirm_timeout": 0}, "rollout.confirm_timeout"),
        ({"migrations": {"database_url": "mysql://x"}}, "rollout.migrations.database_url"),
        ({"speed": 1}, "rollout.speed"),
    ],
    ids=["decreasing", "no-weight", "zero-timeout", "not-postgres", "unknown-key"],
)
def test_config_rollout_errors_name_the_key(rollout: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"rollout": rollout})
    assert caught.value.key == key


def test_example_config_loads_as_is() -> None:
    config = load_config("config/bluegreen.yaml", env={})
    assert config.rollout.steps[-1].weight_bp == 10000
    assert config.rollout.migrations.database_url is None
