"""One ``bluegreen serve`` on the file state store: restarts keep the stored state."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.admin_fixtures import TOKEN
from tests.integration.replica_procs import ServeReplica, colours_of, free_port
from tests.integration.upstreams import Upstream, start_upstream

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"BLUEGREEN_ADMIN_TOKEN": TOKEN}


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    blue, green = await start_upstream("blue"), await start_upstream("green")
    yield blue, green
    await blue.close()
    await green.close()


async def test_kill_9_and_restart_resumes_with_the_stored_weights_not_the_configs(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> None:
    blue, green = upstreams
    state = f"file:{tmp_path / 'state.json'}"
    port = free_port()
    first = await ServeReplica.start(state, blue.address, green.address, env=ENV, port=port)
    async with aiohttp.ClientSession() as session:
        try:
            put = await session.put(
                f"{first.admin_url}/api/v1/weights",
                json={"green": 30},
                params={"wait": "5s"},
                headers=AUTH,
            )
            assert put.status == 200, await put.text()
            await first.stop(signal.SIGKILL)  # no drain, no clean store close
            second = await ServeReplica.start(
                state, blue.address, green.address, "--green-weight", "5", env=ENV, port=port
            )
        except BaseException:
            first.proc.kill()
            raise
        try:
            colours = await colours_of(session, second.proxy_url)
            assert colours.count("green") == 30
            (ignored,) = second.logged("config_weights_ignored")
            assert ignored["config_green_percent"] == 5
            assert ignored["stored_green_percent"] == 30
            replicas = await (await session.get(f"{second.admin_url}/api/v1/replicas")).json()
            # Same proxy address, same replica id: the restarted process took its place.
            assert replicas["live"] == 1
            assert replicas["replicas"][0]["pid"] == second.proc.pid
        finally:
            assert await second.stop() == 0


async def test_admin_on_a_public_address_without_a_token_refuses_to_start(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> None:
    blue, green = upstreams
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_ADMIN")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", "serve", "--listen", f"127.0.0.1:{free_port()}",
        "--admin", "0.0.0.0:0", "--state", f"file:{tmp_path / 's.json'}",
        "--blue", blue.address, "--green", green.address,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "--admin: the admin API would listen on 0.0.0.0:0" in err.decode()
    assert not (tmp_path / "s.json").exists()  # refused before touching anything


async def test_a_short_admin_token_is_refused_without_echoing_it(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> None:
    blue, green = upstreams
    environ = {**os.environ, "BLUEGREEN_ADMIN_TOKEN": "hunter2"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", "serve", "--listen", f"127.0.0.1:{free_port()}",
        "--admin", "127.0.0.1:0", "--state", f"file:{tmp_path / 's.json'}",
        "--blue", blue.address, "--green", green.address,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "BLUEGREEN_ADMIN_TOKEN: the admin token must be at least 16" in err.decode()
    assert "hunter2" not in err.decode()


async def test_readyz_turns_503_while_draining_and_the_replica_is_marked_stopped(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> None:
    blue, green = upstreams
    state = f"file:{tmp_path / 'state.json'}"
    serve = await ServeReplica.start(state, blue.address, green.address, env=ENV)
    blue.hold_next()
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(20):
                while (await session.get(f"{serve.admin_url}/readyz")).status != 200:  # noqa: ASYNC110 - polling another process
                    await asyncio.sleep(0.05)  # the first health probes are on their way
            held = asyncio.ensure_future(session.get(f"{serve.proxy_url}/hold"))
            await asyncio.wait_for(blue.held.wait(), 10)
            serve.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                while True:
                    ready = await session.get(f"{serve.admin_url}/readyz")
                    if ready.status == 503:
                        break
                    await asyncio.sleep(0.02)
            body = await ready.json()
            assert body["checks"]["proxy"] == {"ok": False, "detail": "draining or stopped"}
            blue.release.set()
            assert (await held).status == 200  # the in-flight request finished
            assert await asyncio.wait_for(serve.proc.wait(), 30) == 0  # one SIGTERM was enough
        finally:
            blue.release.set()
            if serve.proc.returncode is None:
                serve.proc.kill()
    from bluegreen.state import open_store

    store = open_store(state, actor="test")
    await store.open()
    try:
        (replica,) = await store.replicas()
        assert replica.stopped
        assert not replica.alive
    finally:
        await store.close()
