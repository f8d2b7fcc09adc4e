"""A real control plane in this event loop: file state store, proxy, replica, admin API.

:func:`running_admin` starts blue and green aiohttp upstreams' proxy on
127.0.0.1:0, a file state store under ``tmp_path``, a :class:`Replica`
applying it to the proxy and heartbeating, and the admin API on
127.0.0.1:0; it yields an :class:`AdminEnv` with an aiohttp session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bluegreen.admin import AdminContext, AdminServer, AdminSettings, create_app, start_admin
from bluegreen.config import Address
from bluegreen.proxy import ProxyServer
from bluegreen.replica import (
    ControlPlaneCollector,
    ReachabilityProber,
    Replica,
    migration_registry,
)
from bluegreen.routing import Colour
from bluegreen.state import open_store
from bluegreen.state.store import StateStore
from tests.integration.proxy_fixtures import proxy_config
from tests.integration.upstreams import Upstream

TOKEN = "test-token-0123456789abcdef"  # noqa: S105 - a test token


@dataclass
class AdminEnv:
    """Everything a test talks to."""

    url: str
    session: aiohttp.ClientSession
    store: StateStore
    proxy: ProxyServer
    replica: Replica
    ctx: AdminContext
    server: AdminServer
    token: str | None
    prober: ReachabilityProber

    def auth(self, **extra: str) -> dict[str, str]:
        """Headers with the bearer token (if any) plus ``extra``."""
        headers = dict(extra)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def put_weights(self, green: float, **kwargs: Any) -> aiohttp.ClientResponse:
        """PUT /api/v1/weights with auth."""
        headers = self.auth(**kwargs.pop("headers", {}))
        return await self.session.put(
            f"{self.url}/api/v1/weights", json={"green": green}, headers=headers, **kwargs
        )

    @property
    def proxy_url(self) -> str:
        """``http://host:port`` of the proxy."""
        host, port = self.proxy.address
        return f"http://{host}:{port}"


@asynccontextmanager
async def running_admin(
    state_path: Path,
    blue: Upstream,
    green: Upstream,
    *,
    token: str | None = TOKEN,
    settings: AdminSettings | None = None,
    sections: dict[str, Any] | None = None,
) -> AsyncIterator[AdminEnv]:
    """The whole control plane of one replica, on loopback port 0."""
    store = open_store(f"file:{state_path}", actor="tests", poll_interval=0.02)
    await store.open()
    config = proxy_config(blue.address, green.address, **(sections or {}))
    replica = Replica(store, "test-replica", heartbeat_interval=0.5)
    proxy = ProxyServer(
        config, listen=Address("127.0.0.1", 0), request_header_hook=replica.header_line
    )
    await proxy.start()
    replica.listen = "{}:{}".format(*proxy.address)
    replica.attach(proxy)
    replica.start_heartbeats()
    prober = ReachabilityProber(
        [
            (Colour.BLUE, Address(blue.host, blue.port)),
            (Colour.GREEN, Address(green.host, green.port)),
        ],
        interval=0.2,
    )
    await prober.check_once()
    prober.start()
    proxy.metrics.register(ControlPlaneCollector(replica, prober.snapshot))
    base = settings or AdminSettings()
    admin_settings = AdminSettings(
        token=token,
        max_body_bytes=base.max_body_bytes,
        event_heartbeat=base.event_heartbeat,
        max_event_streams=base.max_event_streams,
        stats_interval=base.stats_interval,
    )
    ctx = AdminContext(
        store=store,
        actor="admin@tests",
        settings=admin_settings,
        registries=[r for r in (proxy.registry, migration_registry()) if r is not None],
        stats=proxy.stats_snapshot,
        upstreams=prober.snapshot,
        serving=lambda: not proxy.draining,
        replica_id=replica.id,
    )
    server = await start_admin(create_app(ctx), "127.0.0.1", 0)
    session = aiohttp.ClientSession()
    try:
        yield AdminEnv(server.url, session, store, proxy, replica, ctx, server, token, prober)
    finally:
        await session.close()
        await server.close()
        await prober.stop()
        await replica.stop()
        await proxy.stop()
        await store.close()
