"""The demo app's and load generator's pure parts: failure injection, specs, mix, config."""

from __future__ import annotations

import sys

import pytest

from bluegreen.demo import MIGRATIONS_DIR
from bluegreen.demo.app import VERSIONS, FailureInjector, app_argv, version_spec
from bluegreen.demo.load import LoadConfig, LoadGenerator, Mix
from bluegreen.errors import UsageError
from bluegreen.migrations.files import Phase, load_directory


@pytest.mark.parametrize(
    ("ratio", "pattern"),
    [
        (0.0, "...................."),
        (0.5, ".x.x.x.x.x.x.x.x.x.x"),
        (0.25, "...x...x...x...x...x"),
        (0.1, ".........x.........x"),
        (1.0, "xxxxxxxxxxxxxxxxxxxx"),
    ],
    ids=["off", "half", "quarter", "tenth", "all"],
)
def test_failure_injection_is_an_exact_deterministic_share(ratio: float, pattern: str) -> None:
    injector = FailureInjector(ratio)
    assert "".join("x" if injector.should_fail() else "." for _ in pattern) == pattern


def test_reconfiguring_restarts_the_count() -> None:
    injector = FailureInjector(0.5)
    injector.should_fail()
    injector.configure(0.5)
    assert [injector.should_fail() for _ in range(2)] == [False, True]
    injector.configure(0.0)
    assert not any(injector.should_fail() for _ in range(10))


@pytest.mark.parametrize(
    ("ratio", "delay"),
    [(-0.1, 0.0), (1.5, 0.0), (True, 0.0), (0.5, -1.0), (0.5, 61.0)],
    ids=["negative", "above-one", "bool", "negative-delay", "huge-delay"],
)
def test_failure_injection_rejects_bad_settings(ratio: float, delay: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        FailureInjector(ratio, delay=delay)


def test_v1_uses_status_and_v2_status_code() -> None:
    v1, v2 = version_spec("v1"), version_spec("v2")
    assert (v1.read_column, v1.write_columns, v1.legacy_column) == ("status", ("status",), None)
    assert v2.read_column == "status_code"
    assert v2.write_columns == ("status", "status_code")
    assert v2.legacy_column == "status"
    assert "orders.status" in v1.require
    assert "orders.status_code" in v2.require


def test_each_version_needs_a_migration_that_exists() -> None:
    files = {m.version: m for m in load_directory(MIGRATIONS_DIR)}
    assert files[VERSIONS["v1"].min_version].name == "create_orders"
    # v2 reads status_code: it needs the backfill and its validation, nothing of contract
    needed = [m for v, m in files.items() if v <= VERSIONS["v2"].min_version]
    assert {m.phase for m in needed} == {Phase.EXPAND, Phase.MIGRATE}
    assert [m.phase for m in files.values() if m.version > VERSIONS["v2"].min_version] == [
        Phase.CONTRACT
    ]


def test_demo_migrations_run_expand_then_migrate_then_contract() -> None:
    phases = [m.phase for m in load_directory(MIGRATIONS_DIR)]
    assert phases == sorted(phases, key=[Phase.EXPAND, Phase.MIGRATE, Phase.CONTRACT].index)
    assert phases.count(Phase.CONTRACT) == 1
    assert all(m.reversible for m in load_directory(MIGRATIONS_DIR))


def test_unknown_version_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown app version 'v3'; use one of v1, v2"):
        version_spec("v3")


def test_app_argv_keeps_the_database_url_out_of_argv() -> None:
    argv = app_argv("v2", 9002, controls=True)
    assert argv[:3] == [sys.executable, "-m", "bluegreen.demo.app"]
    assert argv[argv.index("--version") + 1] == "v2"
    assert argv[argv.index("--port") + 1] == "9002"
    assert "--controls" in argv
    assert not any("postgres" in a for a in argv)
    assert "--controls" not in app_argv("v1", 9001, controls=False)


@pytest.mark.parametrize(
    ("draw", "operation"),
    [(0.0, "get"), (0.69, "get"), (0.70, "create"), (0.89, "create"), (0.9, "update")],
    ids=["first", "last-get", "first-create", "last-create", "update"],
)
def test_mix_picks_by_cumulative_share(draw: float, operation: str) -> None:
    assert Mix().pick(draw) == operation


@pytest.mark.parametrize(
    "shares",
    [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (float("nan"), 0.5, 0.5)],
    ids=["sum-above-one", "negative", "nan"],
)
def test_mix_must_add_up_to_one(shares: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="add up to 1"):
        Mix(*shares)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"known_ids": -1}, "known_ids"),
        ({"base_url": "127.0.0.1:8080"}, "http"),
    ],
    ids=["zero-rate", "infinite-rate", "timeout", "in-flight", "ids", "url"],
)
def test_load_config_validates(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"base_url": "http://127.0.0.1:8080"} | kwargs
    with pytest.raises(ValueError, match=message):
        LoadConfig(**values)  # type: ignore[arg-type]


def test_phases_set_before_the_start_replace_the_first_segment() -> None:
    load = LoadGenerator(LoadConfig("http://127.0.0.1:1"), clock=lambda: 100.0)
    load.set_phase("ramp", 10)
    assert [(e.phase, e.green_weight) for e in load.timeline] == [("ramp", 10)]


def test_notes_keep_the_phase_and_weight() -> None:
    now = [0.0]
    load = LoadGenerator(LoadConfig("http://127.0.0.1:1"), clock=lambda: now[0])
    load._t0 = 0.0  # started
    now[0] = 3.0
    load.set_phase("ramp", 50)
    now[0] = 3.5
    load.note("green starts failing")
    assert [(e.at, e.phase, e.green_weight, e.note) for e in load.timeline] == [
        (0.0, "idle", 0.0, ""),
        (3.0, "ramp", 50, ""),
        (3.5, "ramp", 50, "green starts failing"),
    ]
    assert load.progress().green_weight == 50
