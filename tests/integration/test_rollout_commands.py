"""Operator commands through the admin API and the CLI; contract; CI's ``start --wait``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.integration.replica_procs import ServeReplica
from tests.integration.rollout_fixtures import (
    TOKEN,
    Api,
    UpstreamProc,
    baking,
    log_entries,
    phase_is,
    start_serve,
    wait_until,
    write_config,
    write_migrations,
)

pytestmark = [pytest.mark.slow]


@dataclass
class Env:
    blue: UpstreamProc
    green: UpstreamProc
    serve: ServeReplica
    api: Api
    tmp: Path


@contextlib.asynccontextmanager
async def env_for(tmp_path: Path, **config: object) -> AsyncIterator[Env]:
    blue = await UpstreamProc.start("blue")
    green = await UpstreamProc.start("green")
    path = write_config(tmp_path / "bluegreen.yaml", **config)  # type: ignore[arg-type]
    serve = await start_serve(f"file:{tmp_path / 'state.json'}", blue, green, path)
    session = aiohttp.ClientSession()
    try:
        yield Env(blue, green, serve, Api(serve.admin_url, session), tmp_path)
    finally:
        await session.close()
        await serve.stop()
        await blue.stop()
        await green.stop()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with env_for(
        tmp_path, steps=[{"weight": 10, "bake": "30s"}, {"weight": 50, "bake": "30s"}]
    ) as e:
        yield e


async def cli(env: Env, *args: str, limit: float = 60) -> tuple[int, str, str]:
    """Run ``bluegreen rollout ARGS`` against the replica; (exit code, stdout, stderr)."""
    environ = {
        **os.environ,
        "BLUEGREEN_ADMIN_URL": env.serve.admin_url,
        "BLUEGREEN_ADMIN_TOKEN": TOKEN,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", "rollout", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), limit)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_pause_resume_promote_through_api_and_cli(env: Env) -> None:
    api = env.api
    await api.start("v2")
    await api.wait_for(baking(1), 30, "step 1 to bake")

    status, view = await api.post("/pause", {"reason": "checking dashboards"})
    assert status == 200, view
    assert view["paused"] is True
    assert view["rollout"]["bake_started_at"] is None
    left = view["bake_remaining_seconds"]
    assert "resume" in view["allowed"]
    assert "pause" not in view["allowed"]
    # The bake clock stays stopped while paused (checked over several reads).
    for _ in range(3):
        assert (await api.get())["bake_remaining_seconds"] == left

    code, out, err = await cli(env, "pause")
    assert code == 1, (out, err)
    assert "already paused" in err
    assert "allowed now" in err

    code, out, err = await cli(env, "resume")
    assert code == 0, err
    assert "resume:" in out
    view = await api.get()
    assert view["paused"] is False
    assert view["rollout"]["bake_started_at"] is not None

    code, out, err = await cli(env, "status")
    assert code == 0, err
    assert "bake step 1/3" in out
    assert "allowed: pause, promote, abort" in out
    code, out, err = await cli(env, "status", "--output", "json")
    assert json.loads(out)["phase"] == "bake"

    status, view = await api.post("/promote")
    assert status == 200, view
    view = await api.wait_for(phase_is("promoted"), 30, "promotion")
    assert view["weights"]["green"] == 100.0
    assert view["weights"]["live"] == "green"
    assert log_entries(view, "promotion_requested")

    status, body = await api.post("/pause")
    assert status == 409
    assert body["phase"] == "promoted"
    assert "start" in body["allowed"]
    assert "pause is allowed from ramp or bake" in body["error"]


async def test_abort_through_cli_sends_traffic_back(env: Env) -> None:
    api = env.api
    await api.start("v2")
    await api.wait_for(baking(1), 30, "step 1 to bake")
    code, _out, err = await cli(env, "abort", "--reason", "wrong build")
    assert code == 0, err
    view = await api.wait_for(phase_is("aborted"), 30, "the abort to finish")
    assert view["weights"]["green"] == 0.0
    failure = view["rollout"]["failure"]
    assert failure["code"] == "operator_abort"
    assert failure["by_operator"] is True
    assert "wrong build" in failure["message"]
    code, _out, err = await cli(env, "abort")
    assert code == 1
    assert "aborted" in err


async def test_events_stream_carries_the_rollout_phase(env: Env) -> None:
    api = env.api
    seen: list[dict[str, object]] = []

    async def read_events() -> None:
        async with api.session.get(f"{api.url}/api/v1/events") as response:
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    rollout = (data.get("changes") or {}).get("rollout")
                    if rollout:
                        seen.append(rollout)
                        if rollout["phase"] == "bake":
                            return

    reader = asyncio.create_task(read_events())
    await asyncio.sleep(0)  # the stream subscribes before the start below
    await api.wait_for(lambda v: True, 5, "the API")
    await api.start("v2")
    await asyncio.wait_for(reader, 30)
    phases = [r["phase"] for r in seen]
    assert phases[0] == "preflight"
    assert "bake" in phases
    assert seen[-1]["step_index"] == 0
    assert seen[-1]["target_bp"] == 1000


async def test_preflight_prints_every_item(env: Env) -> None:
    code, out, err = await cli(env, "preflight", "--attest", "staging_tested", "--by", "alice")
    assert code == 0, out + err
    assert "✓ colours_healthy" in out
    assert "- migrations_lint" in out  # no migrations configured in this environment
    assert "✓ staging_tested" in out
    assert "attested by alice" in out
    code, out, err = await cli(env, "preflight", "--attest", "no_such_thing")
    assert code == 2
    assert "unknown attestation" in err

    await env.blue.control(fail_health=True)
    code, out, err = await cli(env, "preflight")
    assert code == 1
    assert "✗ colours_healthy" in out
    assert "preflight failed" in out


# --------------------------------------------------------------------------- start --wait


@pytest.fixture
async def quick(tmp_path: Path) -> AsyncIterator[Env]:
    smoke = {
        "checks": [
            {"name": "health", "http": "/health"},
            {"name": "orders", "http": {"path": "/orders", "expect": {"status": 200}}},
        ]
    }
    async with env_for(tmp_path, smoke=smoke) as e:
        yield e


async def test_start_wait_exits_0_when_promoted_and_1_when_rolled_back(quick: Env) -> None:
    code, out, err = await cli(quick, "start", "v2", "--wait", "60s")
    assert code == 0, out + err
    assert "promoted: green serves 100 %" in out
    assert "step 2/3: every replica sends 50 % to green" in out

    # The next rollout targets blue; a blue that fails its smoke test never gets traffic.
    await quick.blue.control(fail=True)
    code, out, err = await cli(quick, "start", "v3", "--wait")
    assert code == 1, out + err
    assert "rolled_back" in out
    assert "reason: smoke_failed" in out
    assert "smoke tests failed on blue: orders" in out
    view = await quick.api.get()
    assert view["weights"] == {"green": 100.0, "blue": 0.0, "live": "green"}

    code, out, err = await cli(quick, "start", "v4", "--step", "10", "--wait")
    assert code == 2
    assert "WEIGHT:BAKE" in err
    code, out, err = await cli(quick, "start", "v4", "--step", "50:1s", "--step", "10:1s")
    assert code == 2
    assert "weights only go up" in err
    environ_url = ["--admin-url", "http://127.0.0.1:9"]
    code, out, err = await cli(quick, "status", *environ_url)
    assert code == 2
    assert "unreachable" in err


# --------------------------------------------------------------------------- contract


@pytest.fixture
async def with_db(tmp_path: Path, pg_dsn: str) -> AsyncIterator[tuple[Env, str]]:
    migrations = write_migrations(tmp_path / "migrations")
    async with env_for(
        tmp_path,
        migrations=migrations,
        database_url=pg_dsn,
        steps=[{"weight": 50, "bake": "30s"}],
        rollout={"contract_grace": "1s"},
    ) as e:
        yield e, pg_dsn


async def _columns(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'"
        )
    finally:
        await conn.close()
    return {r["column_name"] for r in rows}


@pytest.mark.postgres
async def test_contract_is_refused_while_blue_serves_and_runs_after_promotion_and_grace(
    with_db: tuple[Env, str],
) -> None:
    env, dsn = with_db
    api = env.api
    await api.start("v2")
    await api.wait_for(baking(1), 60, "step 1 to bake")
    status, body = await api.post("/contract")
    assert status == 409
    assert "contract is allowed from promoted" in body["error"]

    # A tester pinned to blue keeps a request in flight there.
    held = asyncio.create_task(
        api.session.get(f"{env.serve.proxy_url}/hold", headers={"X-Bluegreen-Colour": "blue"})
    )
    await api.wait_for(lambda v: True, 5, "the API")
    status, view = await api.post("/promote")
    assert status == 200
    view = await api.wait_for(phase_is("promoted"), 30, "promotion")
    assert view["rollout"]["contract"] == "draining"
    status, body = await api.post("/contract", {"now": True})
    assert status == 409
    assert "still has requests in flight" in body["error"]
    code, _out, err = await cli(env, "contract", "--now")
    assert code == 1
    assert "still has requests in flight" in err
    assert "status" in await _columns(dsn)

    await env.blue.control(release=True)
    response = await held
    assert response.status == 200
    assert response.headers["X-Upstream-Colour"] == "blue"
    response.release()
    view = await api.wait_for(
        lambda v: v["rollout"]["contract"] == "due", 30, "the grace period to pass"
    )
    assert log_entries(view, "old_colour_drained")

    # An operator sends traffic back to blue: the contract is refused by its re-check.
    await api.put_weights(90)
    status, view = await api.post("/contract")
    assert status == 200
    view = await api.wait_for(
        lambda v: v["rollout"]["contract"] in ("refused", "done", "failed"), 30, "refusal"
    )
    assert view["rollout"]["contract"] == "refused"
    assert "blue still gets 10 %" in log_entries(view, "contract_refused")[-1]["message"]
    assert "status" in await _columns(dsn)

    await api.put_weights(100)
    refusals = len(log_entries(view, "contract_refused"))
    code, _out, err = await cli(env, "contract")
    assert code == 0, err
    # "refused" is still the state until the leader acts: wait for a new outcome.
    view = await api.wait_for(
        lambda v: (
            v["rollout"]["contract"] in ("done", "failed")
            or len(log_entries(v, "contract_refused")) > refusals
        ),
        30,
        "contract",
    )
    assert view["rollout"]["contract"] == "done", view["summary"]
    contract = view["rollout"]["results"]["contract"]
    assert [m["name"] for m in contract] == ["0004_orders_drop_status"]
    assert await _columns(dsn) == {"id", "status_code"}


@pytest.mark.postgres
async def test_down_migrations_on_rollback_revert_only_this_rollouts_reversible_ones(
    tmp_path: Path, pg_dsn: str
) -> None:
    migrations = write_migrations(tmp_path / "migrations")
    async with env_for(
        tmp_path,
        migrations=migrations,
        database_url=pg_dsn,
        steps=[{"weight": 50, "bake": "30s"}],
        rollout={"down_migrations_on_rollback": True},
    ) as env:
        api = env.api
        await api.start("v2")
        await api.wait_for(baking(1), 60, "step 1 to bake")
        await api.post("/abort", {"reason": "test the way back"})
        view = await api.wait_for(phase_is("aborted"), 60, "the abort")
        reverted = [m["name"] for m in view["rollout"]["results"]["down_migrations"]]
        assert reverted == [
            "0003_orders_backfill",
            "0002_orders_add_status_code",
            "0001_orders_create",
        ]
        assert await _columns(pg_dsn) == set()
        assert log_entries(view, "down_migrations_done")


async def test_weights_wait_for_every_replica(tmp_path: Path) -> None:
    """A second replica that never applies the weight makes the step time out."""
    async with env_for(
        tmp_path,
        steps=[{"weight": 50, "bake": "1s"}],
        rollout={"confirm_timeout": "1500ms"},
    ) as env:
        # A replica that heartbeats an old version forever: a stuck proxy.
        from bluegreen.state import open_store
        from bluegreen.state.model import ReplicaInfo

        store = open_store(f"file:{env.tmp / 'state.json'}", actor="stuck")
        await store.open()
        stop = asyncio.Event()

        async def stuck() -> None:
            while not stop.is_set():
                await store.heartbeat(
                    ReplicaInfo("stuck-replica", 1, "host", 1, "", "2024-01-01T00:00:00Z")
                )
                await asyncio.sleep(0.2)

        beat = asyncio.create_task(stuck())
        try:
            await wait_until(lambda: _replica_seen(env.api), 10, "the stuck replica to be listed")
            await env.api.start("v2")
            view = await env.api.wait_for(
                phase_is("rolling_back", "rolled_back", "promoted"), 30, "the step to time out"
            )
            assert view["phase"] == "rolling_back"
            assert view["rollout"]["failure"]["code"] == "weights_not_confirmed"
            # The fallback's 0 % needs every live replica too: it is asked again until the
            # stuck replica confirms or is no longer alive.
            await env.api.wait_for(
                lambda v: bool(log_entries(v, "weights_retried")), 30, "a retried 0 %"
            )
        finally:
            stop.set()
            await beat
            await store.close()
        view = await env.api.wait_for(phase_is("rolled_back"), 30, "the dead replica to expire")
        assert view["weights"]["green"] == 0.0


async def _replica_seen(api: Api) -> bool:
    async with api.session.get(f"{api.url}/api/v1/replicas") as response:
        body = await response.json()
    return any(r["id"] == "stuck-replica" and r["alive"] for r in body["replicas"])


async def test_switch_script_deploys_the_idle_colour_and_passes_the_exit_code_through(
    quick: Env,
) -> None:
    script = Path(__file__).parents[2] / "scripts" / "blue-green-switch.sh"
    deployed = quick.tmp / "deployed.txt"
    environ = {
        **os.environ,
        "BLUEGREEN": f"{sys.executable} -m bluegreen",
        "BLUEGREEN_ADMIN_URL": quick.serve.admin_url,
        "BLUEGREEN_ADMIN_TOKEN": TOKEN,
        "DEPLOY_COMMAND": f'echo "$BLUEGREEN_VERSION on $BLUEGREEN_TARGET" >> {deployed}',
    }

    async def run(*args: str, **env: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "bash", str(script), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**environ, **env},
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    code, out = await run("v2")
    assert code == 0, out
    assert "finished: v2 is live on green" in out
    assert deployed.read_text() == "v2 on green\n"

    code, out = await run("v3", DEPLOY_COMMAND="exit 3")
    assert code == 1
    assert "deploy command failed" in out
    await quick.blue.control(fail=True)
    code, out = await run("v3")
    assert code == 1, out
    assert "reason: smoke_failed" in out
    assert "traffic is back on green" in out
    code, out = await run()
    assert code == 2
    assert "Usage:" in out
