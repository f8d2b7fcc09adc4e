"""Preflight without a network: config, item modes, attestations, the report and its event."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest

from bluegreen.controller import machine
from bluegreen.controller.conditions import Reason
from bluegreen.controller.preflight import (
    Attestation,
    PreflightInputs,
    PreflightReport,
    run_preflight,
    validate_attestations,
)
from bluegreen.errors import ConfigError, UsageError
from bluegreen.rollout_config import (
    DEFAULT_ATTESTATIONS,
    PREFLIGHT_ITEMS,
    AttestationConfig,
    HealthConfig,
    ItemMode,
    NotificationsConfig,
    PreflightConfig,
    WebhookConfig,
)
from bluegreen.rollout_config_parse import parse_preflight, parse_smoke
from bluegreen.routing import Colour

NOW = 1_714_564_800.0


def inputs(**changes: object) -> PreflightInputs:
    """Nothing to reach over the network: no servers, no migrations, no store."""
    base = PreflightInputs(version="v2", target=Colour.GREEN, servers={})
    return replace(base, **changes)  # type: ignore[arg-type]  # test helper


async def preflight(**changes: object) -> PreflightReport:
    return await run_preflight(inputs(**changes), clock=lambda: NOW)


# --------------------------------------------------------------------------- config


def test_defaults_show_the_seed_attestations_without_requiring_them() -> None:
    cfg = parse_preflight(None, "preflight")
    assert cfg == PreflightConfig()
    assert [a.name for a in cfg.attestations] == [
        "staging_tested", "team_notified", "rollback_runbook",
    ]  # fmt: skip
    assert not any(a.required for a in cfg.attestations)
    assert cfg.mode("migrations_lint") is ItemMode.REQUIRED
    assert cfg.mode("monitoring_active") is ItemMode.WARN


def test_section_parses() -> None:
    cfg = parse_preflight(
        {
            "timeout": "30s",
            "metrics_url": "http://127.0.0.1:9900/metrics",
            "backup_check": ["/usr/local/bin/check-backup", "--max-age", "24h"],
            "attestations": [
                {
                    "name": "staging_tested",
                    "description": "Tested in staging with real data",
                    "link": "https://wiki/staging",
                },
                {"name": "dba_ok", "required": False},
            ],
            "items": {"monitoring_active": "required", "backup_recent": "skip"},
        },
        "preflight",
    )
    assert cfg.timeout == 30
    assert cfg.backup_check is not None
    assert cfg.backup_check.argv == ("/usr/local/bin/check-backup", "--max-age", "24h")
    assert cfg.attestations == (
        AttestationConfig(
            "staging_tested", "Tested in staging with real data", "https://wiki/staging"
        ),
        AttestationConfig("dba_ok", "dba ok", None, False),
    )
    assert cfg.mode("monitoring_active") is ItemMode.REQUIRED
    assert cfg.mode("backup_recent") is ItemMode.SKIP
    assert cfg.mode("migrations_lint") is ItemMode.REQUIRED


def test_an_empty_attestation_list_removes_the_defaults() -> None:
    assert parse_preflight({"attestations": []}, "preflight").attestations == ()


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"items": {"lint": "warn"}}, "preflight.items.lint", "unknown preflight item"),
        (
            {"items": {"migrations_lint": "maybe"}},
            "preflight.items.migrations_lint",
            "warn or skip",
        ),
        (
            {"attestations": [{"name": "colours_healthy"}]},
            "preflight.attestations[0].name",
            "built-in",
        ),
        (
            {"attestations": [{"name": "a"}, {"name": "a"}]},
            "preflight.attestations[1].name",
            "listed twice",
        ),
        ({"attestations": [{"description": "x"}]}, "preflight.attestations[0].name", "letters"),
        ({"metrics_url": "localhost:9900"}, "preflight.metrics_url", "http(s) URL"),
        ({"backup_check": {"argv": []}}, "preflight.backup_check.argv", "empty"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_mistakes_name_the_key(data: object, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_preflight(data, "preflight")
    assert info.value.key == key
    assert message in info.value.problem


def test_unknown_attestations_are_refused_before_anything_runs() -> None:
    validate_attestations(PreflightConfig(), ["staging_tested"])
    with pytest.raises(UsageError, match="unknown attestation 'stagin_tested'; known"):
        validate_attestations(PreflightConfig(), ["stagin_tested"])


async def test_run_preflight_refuses_an_unknown_attestation() -> None:
    with pytest.raises(UsageError, match="unknown attestation"):
        await preflight(attestations=(Attestation("nope", "alice", NOW),))


# --------------------------------------------------------------------------- items


async def test_every_item_is_reported_in_checklist_order() -> None:
    report = await preflight()
    names = [i.name for i in report.items]
    assert names == [*PREFLIGHT_ITEMS, *(a.name for a in DEFAULT_ATTESTATIONS)]
    skipped = {i.name for i in report.items if i.skipped}
    assert skipped == {
        "migrations_history", "migrations_lint", "migrations_reversible",
        "expand_backward_compatible", "monitoring_active", "backup_recent",
        "state_store_writable",
    }  # fmt: skip
    assert report.item("migrations_lint").reason == "no migrations directory configured"
    assert report.item("backup_recent").reason.startswith("no backup check configured")


async def test_no_servers_fail_the_health_items() -> None:
    report = await preflight()
    assert not report.ok
    assert {i.name for i in report.blocking} == {"health_checks_implemented", "colours_healthy"}
    assert "blue has no servers; list them under upstreams.blue.servers" in (
        report.item("colours_healthy").reason
    )


async def test_analysis_disabled_blocks_unless_demoted_to_a_warning() -> None:
    off = HealthConfig(analysis_enabled=False)
    report = await preflight(health=off)
    item = report.item("automatic_rollback_configured")
    assert item.blocking
    assert "health.analysis.enabled is false" in item.reason
    warn = PreflightConfig(items={"automatic_rollback_configured": ItemMode.WARN})
    item = (await preflight(health=off, preflight=warn)).item("automatic_rollback_configured")
    assert not item.ok
    assert not item.required
    assert item.mark == "!"


async def test_a_skipped_item_says_so() -> None:
    skip = PreflightConfig(items={"colours_healthy": ItemMode.SKIP})
    item = (await preflight(preflight=skip)).item("colours_healthy")
    assert (item.ok, item.skipped, item.mark) == (True, True, "-")
    assert item.reason == "skipped (preflight.items.colours_healthy: skip)"


async def test_rollback_item_states_the_limits() -> None:
    item = (await preflight()).item("automatic_rollback_configured")
    assert item.ok
    assert item.reason == (
        "analysis every 5 s falls back after 2 failing window(s): error rate above the live "
        "colour's + 1 % (or 5 % absolute), p99 above 1.5x the live colour's; active probes on"
    )


async def test_smoke_item_warns_without_configured_checks() -> None:
    item = (await preflight()).item("smoke_tests_configured")
    assert (item.ok, item.required) == (False, False)
    assert "only the default GET /health runs" in item.reason


async def test_smoke_item_checks_commands_and_databases() -> None:
    smoke = parse_smoke(
        {
            "target": [
                {"name": "schema", "sql": {"require": ["orders"]}},
                {"name": "hook", "command": ["./no-such-smoke-script.sh"]},
            ]
        },
        "smoke",
    )
    item = (await preflight(smoke=smoke)).item("smoke_tests_configured")
    assert not item.ok
    assert item.reason == (
        "hook: command not found: ./no-such-smoke-script.sh; "
        "schema: no database URL (smoke.database_url)"
    )
    smoke = parse_smoke(
        {
            "checks": [{"name": "health", "http": "/health"}],
            "target": [
                {"name": "schema", "sql": {"require": ["orders"]}},
                {"name": "hook", "command": [sys.executable, "-c", "pass"]},
            ],
        },
        "smoke",
    )
    item = (await preflight(smoke=smoke, database_url="postgresql://x@h/db")).item(
        "smoke_tests_configured"
    )
    assert item.ok
    assert item.reason == (
        "3 check(s) for green (1 http, 1 sql, 1 command); blue re-checked with 1 after the "
        "migrations"
    )


async def test_notifications_item() -> None:
    item = (await preflight()).item("notifications_configured")
    assert not item.ok
    assert not item.required
    only_steps = NotificationsConfig(
        webhooks=(WebhookConfig("a", "https://x/y", facts=frozenset({"step_reached"})),)
    )
    item = (await preflight(notifications=only_steps)).item("notifications_configured")
    assert not item.ok
    assert "rollout_started or fallback_started" in item.reason
    good = NotificationsConfig(webhooks=(WebhookConfig("team", "https://x/y"),))
    item = (await preflight(notifications=good)).item("notifications_configured")
    assert item.ok
    assert item.reason == "1 webhook(s) (team) are told about the rollout"


async def test_required_attestations_block_until_given() -> None:
    cfg = PreflightConfig(
        attestations=(AttestationConfig("staging_tested", "Tested in staging", "https://wiki/s"),),
        items={"colours_healthy": ItemMode.SKIP, "health_checks_implemented": ItemMode.SKIP},
    )
    report = await preflight(preflight=cfg)
    assert [i.name for i in report.blocking] == ["staging_tested"]
    item = report.item("staging_tested")
    assert item.kind == "attestation"
    assert item.reason == "not attested; once done, start with --attest staging_tested"
    assert "(https://wiki/s)" in report.lines()[-2]

    given = (Attestation("staging_tested", "alice", NOW, "ran the full suite on a prod copy"),)
    report = await preflight(preflight=cfg, attestations=given)
    assert report.ok
    item = report.item("staging_tested")
    assert item.attested_by == "alice"
    assert item.reason == (
        "attested by alice at 2024-05-01T12:00:00Z (ran the full suite on a prod copy)"
    )


async def test_report_renders_and_serialises() -> None:
    report = await preflight()
    lines = report.lines()
    assert lines[-1] == (
        "preflight failed: health_checks_implemented, colours_healthy (5 warning(s))"
    )
    marks = {line.split()[1]: line.split()[0] for line in lines[:-1]}
    assert marks["colours_healthy"] == "✗"
    assert marks["migrations_lint"] == "-"
    assert marks["automatic_rollback_configured"] == "✓"
    assert marks["staging_tested"] == "!"
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is False
    assert data["target"] == "green"
    assert len(data["items"]) == len(report.items)


async def test_the_event_drives_the_state_machine() -> None:
    report = await preflight()
    event = report.event()
    assert isinstance(event, machine.PreflightFailed)
    warning = next(i for i in event.items if i.name == "smoke_tests_configured")
    assert warning.detail.endswith("(warning only)")
    rollout, _ = machine.transition(None, machine.Start("v2", salt="s"), NOW)
    failed, actions = machine.transition(rollout, event, NOW + 1)
    assert failed.failure is not None
    assert failed.failure.code is Reason.PREFLIGHT_FAILED
    assert "colours_healthy" in failed.failure.message
    assert failed.results.preflight == event.items
    assert any(isinstance(a, machine.Notify) for a in actions)
