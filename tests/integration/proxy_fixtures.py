"""Fixtures for proxy tests: blue and green upstreams, a proxy in this event loop.

Import the fixtures into a test module (``from tests.integration.proxy_fixtures
import blue, green``) and start proxies with :func:`running_proxy`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bluegreen.config import Address, Config, parse_config
from bluegreen.logs import AccessLog
from bluegreen.proxy import ProxyServer, RequestHeaderHook
from tests.integration.rawhttp import RawClient
from tests.integration.upstreams import Upstream, start_upstream


@pytest.fixture
async def blue() -> AsyncIterator[Upstream]:
    """An aiohttp upstream answering as blue."""
    up = await start_upstream("blue")
    yield up
    await up.close()


@pytest.fixture
async def green() -> AsyncIterator[Upstream]:
    """An aiohttp upstream answering as green."""
    up = await start_upstream("green")
    yield up
    await up.close()


def proxy_config(
    blue: str | list[str], green: str | list[str], **sections: dict[str, Any]
) -> Config:
    """A validated config for the given servers plus any sections (YAML-shaped dicts)."""
    document: dict[str, Any] = {
        "upstreams": {
            "blue": {"servers": [blue] if isinstance(blue, str) else blue},
            "green": {"servers": [green] if isinstance(green, str) else green},
        },
        **sections,
    }
    return parse_config(document)


class AccessLines:
    """Collects access-log batches in memory; decoded on demand."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []

    def write(self, batch: bytes) -> None:
        self.batches.append(batch)

    def records(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(line) for b in self.batches for line in b.splitlines()]


@asynccontextmanager
async def running_proxy(
    config: Config,
    *,
    access: AccessLines | None = None,
    hook: RequestHeaderHook | None = None,
) -> AsyncIterator[ProxyServer]:
    """A ProxyServer on 127.0.0.1 port 0 in this loop; stopped afterwards."""
    loop = asyncio.get_running_loop()
    access_log = AccessLog(access.write, loop=loop, interval=0.01) if access else None
    proxy = ProxyServer(
        config,
        listen=Address("127.0.0.1", 0),
        access_log=access_log,
        request_header_hook=hook,
    )
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def connect(proxy: ProxyServer) -> RawClient:
    """A raw client connected to the proxy."""
    host, port = proxy.address
    return await RawClient.connect(host, port)


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
