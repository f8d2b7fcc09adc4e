"""``bluegreen status``, ``weights`` and ``flags`` as real processes against a real admin API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bluegreen.state.model import ReplicaInfo
from tests.integration.admin_fixtures import TOKEN, AdminEnv, running_admin
from tests.integration.proxy_fixtures import blue, green  # noqa: F401
from tests.integration.upstreams import Upstream


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
async def env(tmp_path: Path, blue: Upstream, green: Upstream) -> AsyncIterator[AdminEnv]:  # noqa: F811
    async with running_admin(tmp_path / "state.json", blue, green) as admin:
        yield admin


async def cli(
    env: AdminEnv | None, *args: str, token: str | None = TOKEN, url: str | None = None
) -> Run:
    """Run ``bluegreen ARGS`` with the admin URL and token in the environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_ADMIN")}
    environ["BLUEGREEN_ADMIN_URL"] = url or (env.url if env else "http://127.0.0.1:9")
    if token is not None:
        environ["BLUEGREEN_ADMIN_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def test_weights_set_with_wait_reports_every_replica_applied(env: AdminEnv) -> None:
    run = await cli(env, "weights", "set", "--green", "10", "--wait", "5s")
    assert run.code == 0, run.err
    version = env.store.current.version
    assert env.store.current.green_weight_bp == 1000
    assert "blue 90% / green 10%" in run.out
    assert f"all 1 live replica run version {version}" in run.out


async def test_weights_set_json_output(env: AdminEnv) -> None:
    run = await cli(env, "weights", "set", "--green", "12.5", "--output", "json")
    assert run.code == 0, run.err
    body = run.json()
    assert body["changed"] is True
    assert body["weights"]["green_bp"] == 1250


async def test_weights_get_prints_the_split(env: AdminEnv) -> None:
    await (await env.put_weights(30)).read()
    run = await cli(env, "weights", "get")
    assert run.code == 0, run.err
    assert "blue 70% / green 30%" in run.out


async def test_wait_that_runs_out_exits_1_naming_who_is_behind(env: AdminEnv) -> None:
    await env.store.heartbeat(
        ReplicaInfo(
            id="stuck-replica", applied_version=1, host="h", pid=1, listen="",
            started_at="2024-01-01T00:00:00.000Z",
        )
    )  # fmt: skip
    run = await cli(env, "weights", "set", "--green", "20", "--wait", "300ms")
    assert run.code == 1
    assert "behind: stuck-replica" in run.err
    assert env.store.current.green_weight_bp == 2000  # written all the same


async def test_wrong_token_exits_1_with_the_servers_reason(env: AdminEnv) -> None:
    wrong = "not-the-token-at-all"
    run = await cli(env, "weights", "set", "--green", "10", token=wrong)
    assert run.code == 1
    assert "401" in run.err
    assert env.store.current.green_weight_bp == 0


async def test_missing_token_says_how_to_set_it(env: AdminEnv) -> None:
    run = await cli(env, "weights", "set", "--green", "10", token=None)
    assert run.code == 1
    assert "BLUEGREEN_ADMIN_TOKEN" in run.err


async def test_if_match_conflict_exits_1(env: AdminEnv) -> None:
    old = env.store.current.version
    await (await env.put_weights(5)).read()
    run = await cli(env, "weights", "set", "--green", "10", "--if-match", str(old))
    assert run.code == 1
    assert "409" in run.err
    assert env.store.current.green_weight_bp == 500


@pytest.mark.parametrize(
    "args",
    [
        ("weights", "set", "--green", "101"),
        ("weights", "set", "--green", "ten"),
        ("weights", "set", "--green", "10.001"),
        ("weights", "set", "--green", "10", "--wait", "10h"),
    ],
    ids=["out-of-range", "not-a-number", "too-fine", "wait-too-long"],
)
async def test_bad_values_exit_2_without_asking_the_server(
    env: AdminEnv, args: tuple[str, ...]
) -> None:
    run = await cli(env, *args)
    assert run.code == 2
    assert run.err.startswith("bluegreen: --")
    assert env.store.current.version == 1


async def test_unreachable_admin_api_exits_2() -> None:
    run = await cli(None, "status", url="http://127.0.0.1:9")
    assert run.code == 2
    assert "unreachable" in run.err


async def test_unusable_admin_url_exits_2() -> None:
    run = await cli(None, "weights", "get", url="ftp://example")
    assert run.code == 2
    assert "not usable" in run.err


async def test_flags_set_list_delete(env: AdminEnv) -> None:
    created = await cli(
        env, "flags", "set", "new_checkout", "--percent", "10", "--allow", "alice",
        "--allow", "bob", "--colour", "green", "--description", "new checkout",
    )  # fmt: skip
    assert created.code == 0, created.err
    assert "created: flag new_checkout" in created.out
    listed = await cli(env, "flags", "list")
    assert listed.code == 0
    header, row = listed.out.splitlines()[:2]
    assert header.split() == ["flag", "percent", "allow", "colour", "description"]
    assert row.split()[:4] == ["new_checkout", "10%", "2", "green"]
    deleted = await cli(env, "flags", "delete", "new_checkout", "--wait", "5s")
    assert deleted.code == 0, deleted.err
    assert "new_checkout" not in env.store.current.flags


async def test_flags_set_keeps_the_options_not_given(env: AdminEnv) -> None:
    await cli(env, "flags", "set", "beta", "--allow", "alice", "--colour", "green")
    run = await cli(env, "flags", "set", "beta", "--percent", "25")
    assert run.code == 0, run.err
    flag = env.store.current.flags["beta"]
    assert flag.percent_bp == 2500
    assert flag.allow == ("alice",)
    assert str(flag.colour) == "green"


async def test_flags_evaluate(env: AdminEnv) -> None:
    await cli(env, "flags", "set", "beta", "--allow", "alice")
    assert (await cli(env, "flags", "evaluate", "--key", "alice")).out.strip() == "beta"
    assert (await cli(env, "flags", "evaluate", "--key", "bob")).out.strip() == "(no flags)"


async def test_deleting_a_missing_flag_exits_1(env: AdminEnv) -> None:
    run = await cli(env, "flags", "delete", "nope")
    assert run.code == 1
    assert "404" in run.err


async def test_status_shows_weights_traffic_replicas_and_flags(env: AdminEnv) -> None:
    await (await env.put_weights(50, params={"wait": "5s"})).read()
    await env.session.put(f"{env.url}/api/v1/flags/beta", json={"percent": 5}, headers=env.auth())
    for _ in range(10):
        async with env.session.get(f"{env.proxy_url}/") as answer:
            await answer.read()
    run = await cli(env, "status")
    assert run.code == 0, run.err
    assert "weights: blue 50% / green 50%" in run.out
    assert "colour  weight  rate" in run.out
    assert "test-replica" in run.out
    assert f"all 1 live replica run version {env.store.current.version}" in run.out
    assert "flags: beta 5%" in run.out


async def test_status_json_has_every_section(env: AdminEnv) -> None:
    run = await cli(env, "status", "--output", "json")
    assert run.code == 0, run.err
    body = run.json()
    assert set(body) >= {"weights", "replicas", "stats", "flags", "rollout", "version"}
    assert body["replicas"]["live"] == 1


async def test_status_watch_redraws_until_interrupted(env: AdminEnv) -> None:
    environ = {**os.environ, "BLUEGREEN_ADMIN_URL": env.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", "status", "--watch", "--interval", "0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    assert proc.stdout is not None
    frames = 0
    async with asyncio.timeout(30):
        while frames < 3:
            line = await proc.stdout.readline()
            assert line, "status --watch ended early"
            frames += line.startswith(b"--- ")  # not a TTY: plain frames, no escape codes
        proc.send_signal(signal.SIGINT)
        rest, _ = await proc.communicate()
    assert proc.returncode == 0
    assert b"\x1b[" not in rest
