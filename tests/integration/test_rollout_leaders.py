"""Crash safety of the controller: SIGKILL mid-bake, restart, leadership among replicas."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.replica_procs import free_port
from tests.integration.rollout_fixtures import (
    Api,
    Traffic,
    UpstreamProc,
    baking,
    log_entries,
    phase_is,
    start_serve,
    write_config,
)

pytestmark = [pytest.mark.slow]

BAKE = 5.0


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[UpstreamProc, UpstreamProc]]:
    blue = await UpstreamProc.start("blue")
    green = await UpstreamProc.start("green")
    try:
        yield blue, green
    finally:
        await blue.stop()
        await green.stop()


def weight_history(state: dict[str, object]) -> list[tuple[int, int]]:
    """(from, to) of every stored change of green's weight, in order."""
    history = state["history"]
    assert isinstance(history, list)
    return [
        (e["detail"]["green_weight_bp"]["from"], e["detail"]["green_weight_bp"]["to"])
        for e in history
        if e["kind"] == "weights_changed" and "green_weight_bp" in e["detail"]
    ]


async def test_controller_killed_mid_bake_resumes_with_the_remaining_bake(
    tmp_path: Path, upstreams: tuple[UpstreamProc, UpstreamProc]
) -> None:
    blue, green = upstreams
    config = write_config(
        tmp_path / "bluegreen.yaml",
        steps=[{"weight": 10, "bake": "500ms"}, {"weight": 50, "bake": f"{BAKE}s"}],
    )
    state = f"file:{tmp_path / 'state.json'}"
    port = free_port()
    serve = await start_serve(state, blue, green, config, port=port)
    async with aiohttp.ClientSession() as session:
        api = Api(serve.admin_url, session)
        try:
            await api.start("v2")
            view = await api.wait_for(baking(2), 30, "step 2 to bake")
            await api.wait_for(
                lambda v: (v.get("bake_remaining_seconds") or BAKE) < BAKE - 1.0,
                10,
                "a second of step 2's bake",
            )
            serve.proc.send_signal(signal.SIGKILL)
            await serve.proc.wait()
            killed_with = api.last["bake_remaining_seconds"]
        finally:
            await serve.stop()
        serve = await start_serve(state, blue, green, config, port=port)
        try:
            api = Api(serve.admin_url, session)
            view = await api.wait_for(phase_is("promoted", "rolled_back"), 30, "promotion")
            state_doc = await api.state()
        finally:
            await serve.stop()
    assert view["phase"] == "promoted", view["summary"]
    reached = log_entries(view, "step_reached")
    requested = log_entries(view, "weights_requested")
    step2 = next(e for e in reached if e["message"].startswith("step 2/"))
    step3 = next(e for e in requested if e["message"].startswith("step 3/"))
    baked = step3["at"] - step2["at"]
    # The bake clock is wall time, and it was not restarted: step 3 came when step 2's
    # bake was over (plus the restart's latency at most), not a whole bake after it.
    assert BAKE - 0.05 <= baked < BAKE + 1.5, f"step 2 baked {baked:.2f}s (configured {BAKE}s)"
    restarted = log_entries(view, "controller_restarted")
    assert restarted, "the restart is in the rollout's log"
    assert "of bake left" in restarted[-1]["message"]
    assert killed_with is not None
    assert killed_with < BAKE - 1.0
    # Weights never jumped: every stored change went one step up.
    assert weight_history(state_doc) == [(0, 1000), (1000, 5000), (5000, 10000)]


@pytest.mark.postgres
async def test_two_controllers_one_leads_and_the_other_takes_over(
    tmp_path: Path, pg_dsn: str, upstreams: tuple[UpstreamProc, UpstreamProc]
) -> None:
    blue, green = upstreams
    config = write_config(
        tmp_path / "bluegreen.yaml",
        steps=[{"weight": 10, "bake": "2s"}, {"weight": 50, "bake": "2s"}],
        rollout={"confirm_timeout": "15s"},
    )
    first = await start_serve(pg_dsn, blue, green, config)
    second = await start_serve(pg_dsn, blue, green, config)
    replicas = [first, second]
    async with aiohttp.ClientSession() as session:
        try:
            api = Api(first.admin_url, session)
            view = await api.wait_for(lambda v: v.get("leader") is not None, 20, "a leader")
            leading = [r for r in replicas if r.logged("controller_leading")]
            assert len(leading) == 1, "exactly one controller leads"
            leader = leading[0]
            follower = second if leader is first else first
            api = Api(follower.admin_url, session)
            async with Traffic(follower.proxy_url) as traffic:
                await api.start("v2")  # a command to the follower: the leader acts on it
                await api.wait_for(baking(1), 30, "step 1 to bake")
                leader.proc.send_signal(signal.SIGKILL)
                await leader.proc.wait()
                view = await api.wait_for(phase_is("promoted", "rolled_back"), 60, "promotion")
            assert view["phase"] == "promoted", view["summary"]
            assert follower.logged("controller_leading"), "the follower took over"
            assert log_entries(view, "controller_restarted")
            assert traffic.failures == []
            state_doc = await api.state()
            assert weight_history(state_doc) == [(0, 1000), (1000, 5000), (5000, 10000)]
        finally:
            for replica in replicas:
                await replica.stop()


async def test_a_draining_leader_hands_over(
    tmp_path: Path, upstreams: tuple[UpstreamProc, UpstreamProc]
) -> None:
    blue, green = upstreams
    config = write_config(tmp_path / "bluegreen.yaml")
    state = f"file:{tmp_path / 'state.json'}"
    first = await start_serve(state, blue, green, config)
    second = await start_serve(state, blue, green, config)
    async with aiohttp.ClientSession() as session:
        try:
            api = Api(second.admin_url, session)
            await api.wait_for(lambda v: v.get("leader") is not None, 20, "a leader")
            leader = first if first.logged("controller_leading") else second
            other = second if leader is first else first
            assert await leader.stop() == 0
            api = Api(other.admin_url, session)
            await api.wait_for(
                lambda v: v.get("leader") is not None and other.logged("controller_leading"),
                20,
                "the other replica to lead",
            )
        finally:
            await first.stop()
            await second.stop()
    assert leader.logged("controller_standing_down")
