"""Pure parts of ``bluegreen demo``: what each variant allows, the config it writes, flags."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bluegreen.cli import build_parser
from bluegreen.cli.demo_cmd import options_from
from bluegreen.config import parse_config
from bluegreen.demo import MIGRATIONS_DIR
from bluegreen.demo.config import DemoServeSettings, serve_config, write_serve_config
from bluegreen.demo.report import RequestRecord
from bluegreen.demo.variants import (
    KILL_RACE,
    Action,
    FailureWindow,
    Variant,
    allowed,
    allowed_failures,
)
from bluegreen.errors import UsageError
from bluegreen.routing import Colour

PLAIN = Variant()
BREAK = Variant(Action.BREAK)
KILL = Variant(Action.KILL)
WINDOW = FailureWindow(struck_at=10.0, zero_at=11.0)


def rec(
    start: float,
    *,
    colour: str = "green",
    status: int | None = 500,
    method: str = "GET",
    latency: float = 0.01,
) -> RequestRecord:
    return RequestRecord(
        start=start,
        latency=latency,
        operation={"GET": "get", "POST": "create", "PATCH": "update"}[method],
        method=method,
        idempotent=method == "GET",
        status=status,
        error=None if status is not None else "disconnected",
        colour=colour,
        segment=0,
    )


# --------------------------------------------------------------------------- variants


def test_the_plain_run_must_promote_and_allows_no_failure() -> None:
    assert PLAIN.name is None
    assert PLAIN.expected_outcome == "promoted"
    assert not allowed(rec(10.5), PLAIN, WINDOW)
    assert PLAIN.rule == "no request may fail"


@pytest.mark.parametrize("variant", [BREAK, KILL], ids=["break", "kill"])
def test_failure_variants_must_roll_back(variant: Variant) -> None:
    assert variant.expected_outcome == "rolled_back"
    assert variant.name == f"{variant.action} green"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (rec(10.5), False),  # idempotent: the proxy asked blue instead
        (rec(10.5, method="POST"), True),
        (rec(10.5, method="PATCH"), True),
        (rec(9.99, method="POST", latency=0.02), True),  # sent before, answered by failing green
        (rec(11.0, method="POST"), True),  # routed at the last moment green still had weight
        (rec(9.5, method="POST"), False),  # answered before green started failing
        (rec(11.2, method="POST"), False),  # after the fallback: green had no weight any more
        (rec(10.5, method="POST", colour="blue"), False),
        (rec(10.5, method="POST", status=None), False),  # no answer is not an injected 500
        (rec(10.5, method="POST", status=200), False),  # not a failure at all
    ],
    ids=[
        "get-in-window",
        "post-in-window",
        "patch-in-window",
        "in-flight-at-break",
        "at-zero",
        "before",
        "after-fallback",
        "blue",
        "no-answer",
        "success",
    ],
)
def test_break_allows_only_greens_5xx_to_non_idempotent_requests_in_the_window(
    record: RequestRecord, expected: bool
) -> None:
    assert allowed(record, BREAK, WINDOW) is expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (rec(9.99, method="POST", status=502, colour="unknown", latency=0.05), True),
        (rec(9.99, method="PATCH", status=None, colour="unknown", latency=0.05), True),
        (rec(10.0 + KILL_RACE, method="POST", status=502, colour="unknown"), True),
        (rec(9.99, status=502, colour="unknown", latency=0.05), False),  # idempotent: retried
        (rec(10.2, method="POST", status=502, colour="unknown"), False),  # sent well after
        (rec(9.0, method="POST", status=502, colour="unknown"), False),  # over before the kill
        (rec(9.99, method="POST", status=500, latency=0.05), False),  # an app's own 500
    ],
    ids=["post-in-flight", "patch-cut", "race", "get", "late-post", "early-post", "app-500"],
)
def test_kill_allows_only_non_idempotent_requests_in_flight_at_the_kill(
    record: RequestRecord, expected: bool
) -> None:
    assert allowed(record, KILL, WINDOW) is expected


def test_nothing_is_allowed_before_the_variant_struck() -> None:
    assert allowed_failures([rec(10.5, method="POST")], BREAK, FailureWindow()) == 0


def test_allowed_failures_counts_failed_records_only() -> None:
    records = [
        rec(10.5, method="POST"),
        rec(10.6, method="POST", status=200),
        rec(10.7, method="POST", colour="blue"),
        rec(10.8, method="PATCH"),
        rec(10.9),  # a GET green failed: not allowed
    ]
    assert allowed_failures(records, BREAK, WINDOW) == 2


# --------------------------------------------------------------------------- config


def settings(**changes: object) -> DemoServeSettings:
    base: dict[str, object] = {
        "proxy_port": 18080,
        "blue": "127.0.0.1:18001",
        "green": "127.0.0.1:18002",
        "state_url": "file:/tmp/demo-state.json",
    }
    base.update(changes)
    return DemoServeSettings(**base)  # type: ignore[arg-type]


def parsed(doc: dict[str, object]) -> object:
    """The generated document through the real config parser (env interpolated as serve does)."""
    text = yaml.safe_dump(doc).replace("${DATABASE_URL}", "postgresql://demo@127.0.0.1/demo")
    return parse_config(yaml.safe_load(text), source="demo.yaml")


def test_the_generated_config_is_valid_and_says_what_the_demo_needs() -> None:
    cfg = parsed(serve_config(settings(bake=2.5, contract_grace=0.5)))
    assert cfg.listeners.proxy.port == 18080  # type: ignore[attr-defined]
    rollout = cfg.rollout  # type: ignore[attr-defined]
    assert [(s.weight_bp, s.bake) for s in rollout.steps] == [
        (1000, 2.5),
        (5000, 2.5),
        (10000, 2.5),
    ]
    assert rollout.auto_contract is True
    assert rollout.contract_grace == 0.5
    assert Path(rollout.migrations.directory) == MIGRATIONS_DIR
    assert rollout.migrations.database_url == "postgresql://demo@127.0.0.1/demo"
    smoke = cfg.smoke  # type: ignore[attr-defined]
    from bluegreen.rollout_config import SmokeRole

    target = [c.name for c in smoke.checks_for(Colour.GREEN, SmokeRole.TARGET)]
    live = [c.name for c in smoke.checks_for(Colour.BLUE, SmokeRole.LIVE)]
    assert target == ["health", "version", "read", "write", "schema"]
    assert live == ["health", "read", "write"]
    assert cfg.routing.sticky.enabled is False  # type: ignore[attr-defined]


def test_the_config_keeps_secrets_out_of_the_file(tmp_path: Path) -> None:
    path = write_serve_config(tmp_path / "demo.yaml", settings(access_log=tmp_path / "a.log"))
    text = path.read_text()
    assert "${DATABASE_URL}" in text
    assert "token" not in yaml.safe_load(text).get("admin", {})
    assert text.startswith("# Generated by `bluegreen demo`")


def test_extra_sections_replace_the_defaults() -> None:
    doc = serve_config(settings(extra={"routing": {"green_weight": 50}}))
    assert parsed(doc).routing.green_weight_bp == 5000  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- command line


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["demo", *argv])


def test_flags_become_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    options = options_from(args("--break", "green", "--bake", "500ms", "--grace", "2s"))
    assert options.variant == BREAK
    assert (options.bake, options.grace) == (0.5, 2.0)
    assert options.database_url is None
    assert options.rollout_timeout == 3 * 0.5 + 2.0 + 90.0 + 5.0  # 50,000 rows to backfill
    options = options_from(args("--kill", "green", "--rate", "50", "--timeout", "1m"))
    assert options.variant == KILL
    assert (options.rate, options.rollout_timeout) == (50.0, 60.0)


def test_database_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://me@db/x")
    assert options_from(args()).database_url == "postgresql://me@db/x"
    assert options_from(args("--database-url", "postgresql://b/y")).database_url == (
        "postgresql://b/y"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "0"], "--rate must be 1..5000"),
        (["--rows", "-1"], "--rows must be 0..10000000"),
        (["--bake", "soon"], "--bake: expected a duration"),
    ],
    ids=["rate", "rows", "bake"],
)
def test_bad_values_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        options_from(args(*argv))


def test_importing_the_pure_demo_parts_loads_no_io_library() -> None:
    code = (
        "import json, sys\n"
        "import bluegreen.demo.variants, bluegreen.demo.config\n"
        "print(json.dumps([m for m in ('aiohttp', 'asyncpg', 'asyncio') if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
