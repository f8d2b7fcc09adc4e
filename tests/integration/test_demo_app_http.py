"""The demo app's HTTP surface: answers, validation, headers, failure injection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from bluegreen.demo import MIGRATIONS_DIR
from bluegreen.demo.app import VERSION_HEADER, create_app, seed_orders, set_failures
from bluegreen.demo.processes import free_port
from bluegreen.migrations import runner


@asynccontextmanager
async def served(version: str, dsn: str, *, controls: bool = True) -> AsyncIterator[str]:
    app_runner = web.AppRunner(create_app(version, dsn, pool_size=2, controls=controls))
    await app_runner.setup()
    await web.TCPSite(app_runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{app_runner.addresses[0][1]}"
    finally:
        await app_runner.cleanup()


@pytest.fixture
async def v1(pg_dsn: str) -> AsyncIterator[str]:
    await runner.apply(pg_dsn, MIGRATIONS_DIR, to=1)
    await seed_orders(pg_dsn, 10)
    async with served("v1", pg_dsn) as url:
        yield url


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("GET", "/orders/999", None, 404, "no order 999"),
        ("GET", "/orders/abc", None, 404, "no order 'abc'"),
        ("GET", "/orders?limit=0", None, 422, "limit must be 1..100"),
        ("GET", "/orders?status=lost", None, 422, "status must be one of"),
        ("POST", "/orders", {"customer": "", "amount": 1}, 422, "customer must be"),
        ("POST", "/orders", {"customer": "c", "amount": -1}, 422, "amount must be from 0"),
        ("POST", "/orders", {"customer": "c", "amount": True}, 422, "amount must be a number"),
        ("POST", "/orders", {"customer": "c", "amount": 1, "status": "x"}, 422, "status must"),
        ("POST", "/orders", [1, 2], 422, "must be a JSON object"),
        ("PATCH", "/orders/1", {}, 422, "status must be one of"),
        ("PATCH", "/orders/999", {"status": "paid"}, 404, "no order 999"),
        ("DELETE", "/orders/1", None, 405, "Method Not Allowed"),
        ("GET", "/nowhere", None, 404, "Not Found"),
    ],
    ids=[
        "missing-id", "bad-id", "limit", "list-status", "customer", "negative-amount",
        "bool-amount", "bad-status", "array-body", "patch-no-status", "patch-missing",
        "method", "unknown-path",
    ],
)  # fmt: skip
async def test_bad_requests_get_json_errors_with_the_version_header(
    v1: str, method: str, path: str, body: object, status: int, error: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, v1 + path, json=body) as response,
    ):
        assert response.status == status
        assert response.headers[VERSION_HEADER] == "v1"
        assert error in (await response.json())["error"]


@pytest.mark.postgres
async def test_a_body_that_is_not_json_is_refused(v1: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{v1}/orders", data=b"customer=c") as response:
            assert response.status == 415
        headers = {"Content-Type": "application/json"}
        async with session.post(f"{v1}/orders", data=b"{", headers=headers) as response:
            assert response.status == 400


@pytest.mark.postgres
async def test_orders_round_trip(v1: str) -> None:
    async with aiohttp.ClientSession() as session:
        order = {"customer": "ana", "amount": "12.345", "status": "paid"}
        async with session.post(f"{v1}/orders", json=order) as response:
            assert response.status == 201
            created = await response.json()
        assert created["amount"] == 12.35  # numeric(12, 2)
        async with session.patch(f"{v1}/orders/{created['id']}", json={"status": "shipped"}) as r:
            assert (await r.json())["status"] == "shipped"
        async with session.get(f"{v1}/orders?limit=1") as response:
            assert (await response.json())["orders"][0]["id"] == created["id"]
        async with session.get(f"{v1}/version") as response:
            version = await response.json()
        assert (version["version"], version["reads"], version["writes"]) == (
            "v1",
            "status",
            ["status"],
        )
        assert isinstance(version["pid"], int)


@pytest.mark.postgres
async def test_failure_injection_fails_the_exact_share_and_heals(v1: str) -> None:
    async with aiohttp.ClientSession() as session:
        state = await set_failures(v1, 0.5, session=session)
        assert state == {"ratio": 0.5, "delay": 0.0, "health": False}
        statuses = []
        for _ in range(6):
            async with session.get(f"{v1}/orders/1") as response:
                statuses.append(response.status)
        assert statuses == [200, 500, 200, 500, 200, 500]
        async with session.get(f"{v1}/health") as response:
            assert response.status == 200  # /health is spared unless asked
        await set_failures(v1, 0, session=session)
        for _ in range(4):
            async with session.get(f"{v1}/orders/1") as response:
                assert response.status == 200
        async with session.post(f"{v1}/_demo/break", json={"ratio": 2}) as response:
            assert response.status == 422


@pytest.mark.postgres
async def test_controls_exist_only_when_asked_for(pg_dsn: str) -> None:
    async with (
        served("v1", pg_dsn, controls=False) as url,
        aiohttp.ClientSession() as session,
        session.post(f"{url}/_demo/break", json={"ratio": 1}) as response,
    ):
        assert response.status == 404


async def test_health_says_unhealthy_when_the_database_is_unreachable() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    async with served("v2", dsn) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/health") as response:
            assert response.status == 503
            body = await response.json()
        assert body["status"] == "unhealthy"
        assert body["database"] == "unreachable"
        assert body["version"] == "v2"
        async with session.get(f"{url}/orders/1") as response:
            assert response.status == 500
            assert "database error" in (await response.json())["error"]
