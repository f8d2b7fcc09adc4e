"""Whole rollouts through a real ``bluegreen serve``: ramp, promotion, automatic fallback.

Each test runs blue and green as application processes, one ``bluegreen
serve`` process (file state store) in front of them, a real PostgreSQL
database for the rollout's migrations, and a client loop through the proxy.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.integration.replica_procs import ServeReplica
from tests.integration.rollout_fixtures import (
    ANALYSIS_INTERVAL,
    FAILURE_LIMIT,
    Api,
    Traffic,
    UpstreamProc,
    baking,
    log_entries,
    phase_is,
    start_serve,
    write_config,
    write_migrations,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@dataclass
class Env:
    blue: UpstreamProc
    green: UpstreamProc
    serve: ServeReplica
    api: Api
    dsn: str


@pytest.fixture
async def env(tmp_path: Path, pg_dsn: str) -> AsyncIterator[Env]:
    blue = await UpstreamProc.start("blue")
    green = await UpstreamProc.start("green")
    config = write_config(
        tmp_path / "bluegreen.yaml",
        migrations=write_migrations(tmp_path / "migrations"),
        database_url=pg_dsn,
        steps=[
            {"weight": 10, "bake": "1s"},
            {"weight": 50, "bake": "2s"},
            {"weight": 100, "bake": "500ms"},
        ],
    )
    serve = await start_serve(f"file:{tmp_path / 'state.json'}", blue, green, config)
    session = aiohttp.ClientSession()
    try:
        yield Env(blue, green, serve, Api(serve.admin_url, session), pg_dsn)
    finally:
        await session.close()
        await serve.stop()
        await blue.stop()
        await green.stop()


async def test_full_rollout_under_traffic_loses_no_request_and_roles_alternate(env: Env) -> None:
    api = env.api
    async with Traffic(env.serve.proxy_url) as traffic:
        await api.wait_for(lambda v: traffic.total > 20, 10, "traffic to flow")
        started = await api.start("v2")
        assert started["target"] == "green"
        view = await api.wait_for(phase_is("promoted", "rolled_back", "aborted"), 60, "the end")
    assert view["phase"] == "promoted", view["summary"]
    assert traffic.failures == []
    assert traffic.ok > 100
    assert traffic.colours.get("green", 0) > 0
    assert traffic.colours.get("blue", 0) > 0
    assert view["weights"] == {"green": 100.0, "blue": 0.0, "live": "green"}
    record = view["rollout"]
    # Migrations ran before any traffic: expand and migrate, not contract.
    applied = [(m["name"], m["phase"]) for m in record["results"]["migrations"]]
    assert applied == [
        ("0001_orders_create", "expand"),
        ("0002_orders_add_status_code", "expand"),
        ("0003_orders_backfill", "migrate"),
    ]
    conn = await asyncpg.connect(env.dsn)
    try:
        columns = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'"
            )
        }
    finally:
        await conn.close()
    assert columns == {"id", "status", "status_code"}
    # Both colours were smoke-tested: green as the target, blue on the new schema.
    assert {(s["colour"], s["ok"]) for s in record["results"]["smoke"]} == {
        ("green", True),
        ("blue", True),
    }
    # Every step was reached in order, each confirmed before its bake.
    reached = [e["message"] for e in log_entries(view, "step_reached")]
    assert [m.split(":")[0] for m in reached] == ["step 1/3", "step 2/3", "step 3/3"]
    state = await api.state()
    weights = [
        (e["detail"]["green_weight_bp"]["from"], e["detail"]["green_weight_bp"]["to"])
        for e in state["history"]
        if e["kind"] == "weights_changed" and "green_weight_bp" in e["detail"]
    ]
    assert weights == [(0, 1000), (1000, 5000), (5000, 10000)]

    # Roles alternate: the next rollout ramps blue up.
    second = await api.start("v3", steps=[{"weight": 50, "bake": 0.5}])
    assert second["target"] == "blue"
    view = await api.wait_for(phase_is("promoted", "rolled_back", "aborted"), 60, "second end")
    assert view["phase"] == "promoted", view["summary"]
    assert view["weights"] == {"green": 0.0, "blue": 100.0, "live": "blue"}


async def test_green_failing_at_50_percent_falls_back_within_the_detection_bound(
    env: Env,
) -> None:
    api = env.api
    async with Traffic(env.serve.proxy_url) as traffic:
        await api.start("v2", steps=[{"weight": 10, "bake": 1}, {"weight": 50, "bake": 30}])
        await api.wait_for(baking(2), 30, "step 2 (50 %) to bake")
        flipped = time.time()
        await env.green.control(fail=True)
        view = await api.wait_for(phase_is("rolled_back", "aborted", "promoted"), 30, "fallback")
    assert view["phase"] == "rolled_back"
    record = view["rollout"]
    assert record["failure"]["code"] in ("error_rate_above_baseline", "error_rate")
    assert record["failure"]["phase"] == "bake"
    fallback = record["fallback"]
    measured = fallback["weights_zero_at"] - flipped
    # Bound: the failure shows in the first analysis window that contains it (at most
    # one interval after it starts), FAILURE_LIMIT consecutive failing windows decide,
    # then one store write and every replica's confirmation (~0.1 s). One extra interval
    # for a window boundary, and 1.5 s for a loaded 2-core machine.
    bound = (FAILURE_LIMIT + 1) * ANALYSIS_INTERVAL + 1.5
    assert 0 < measured < bound, f"fallback took {measured:.2f}s (bound {bound:.2f}s)"
    # The record's own detection time starts at the first failing window's start: it
    # is never shorter than the real one, and at most one window longer.
    assert fallback["failing_since"] <= flipped + ANALYSIS_INTERVAL
    assert fallback["failing_since"] >= flipped - ANALYSIS_INTERVAL - 0.1
    assert view["weights"]["green"] == 0.0
    assert view["weights"]["live"] == "blue"
    assert view["fallback_seconds"] is not None
    print(
        f"\ndetection: measured {measured * 1000:.0f} ms from green failing to 0 % on every "
        f"replica; recorded detection {view['detection_seconds'] * 1000:.0f} ms, fallback "
        f"{view['fallback_seconds'] * 1000:.0f} ms; {len(traffic.failures)} of "
        f"{traffic.total} client requests failed meanwhile"
    )
    # After the fallback nothing reaches green any more.
    before = traffic.colours.get("green", 0)
    async with Traffic(env.serve.proxy_url, clients=2) as after:
        await api.wait_for(lambda v: after.total > 40, 10, "traffic after the fallback")
    assert after.failures == []
    assert after.colours.get("green", 0) == 0
    assert before > 0


async def test_green_killed_mid_bake_falls_back(env: Env) -> None:
    api = env.api
    async with Traffic(env.serve.proxy_url) as traffic:
        await api.start("v2", steps=[{"weight": 50, "bake": 60}])
        await api.wait_for(baking(1), 30, "step 1 (50 %) to bake")
        await api.wait_for(lambda v: traffic.colours.get("green", 0) > 20, 10, "green traffic")
        await env.green.kill()
        killed = time.time()
        view = await api.wait_for(phase_is("rolled_back", "aborted", "promoted"), 30, "fallback")
    assert view["phase"] == "rolled_back"
    record = view["rollout"]
    assert record["failure"]["code"] in (
        "error_rate_above_baseline",
        "error_rate",
        "probe_failed",
    )
    assert record["fallback"]["weights_zero_at"] - killed < 5
    assert view["weights"]["green"] == 0.0
    # Requests whose connection to the dead green failed were retried on blue.
    assert len(traffic.failures) <= 4 * 2, traffic.failures
