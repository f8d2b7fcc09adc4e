"""Routing through the real proxy, the push API, metrics and the access log."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from bluegreen.routing import Colour, sticky_bucket
from tests.integration.proxy_fixtures import (
    AccessLines,
    blue,
    connect,
    eventually,
    green,
    proxy_config,
    running_proxy,
)
from tests.integration.rawhttp import get
from tests.integration.upstreams import Upstream

__all__ = ["blue", "green"]  # fixtures


def colour_of(response_headers: bytes | None) -> str:
    assert response_headers is not None
    return response_headers.decode()


async def test_ten_percent_sends_exactly_ten_of_a_hundred_unkeyed_requests_to_green(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(blue.address, green.address, routing={"green_weight": 10})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        colours = [
            colour_of((await client.request(get(f"/{i}"))).header("x-upstream-colour"))
            for i in range(100)
        ]
        await client.close()
    assert colours.count("green") == 10
    assert len(green.seen) == 10


async def test_own_sticky_cookie_is_set_once_and_then_honoured(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(
        blue.address,
        green.address,
        routing={"green_weight": 50, "salt": "s1", "sticky": {"own_cookie": "bg_sticky"}},
    )
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        first = await client.request(get("/"))
        cookie = first.header("set-cookie")
        assert cookie is not None
        pair, *attributes = cookie.split(b"; ")
        name, value = pair.split(b"=", 1)
        assert name == b"bg_sticky"
        assert len(value) >= 16
        assert attributes == [b"Max-Age=86400", b"Path=/", b"HttpOnly", b"SameSite=Lax"]
        expected = "green" if sticky_bucket(b"s1", value) < 5000 else "blue"
        assert colour_of(first.header("x-upstream-colour")) == expected
        for _ in range(20):
            again = await client.request(get("/", extra=f"Cookie: a=1; {pair.decode()}\r\n"))
            assert colour_of(again.header("x-upstream-colour")) == expected
            assert again.header("set-cookie") is None
        await client.close()


async def test_sticky_header_keeps_each_user_on_one_colour(blue: Upstream, green: Upstream) -> None:
    config = proxy_config(
        blue.address,
        green.address,
        routing={"green_weight": 50, "salt": "s2", "sticky": {"header": "X-User"}},
    )
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        seen: dict[str, set[str]] = {}
        for round_ in range(3):
            for user in range(30):
                response = await client.request(get(f"/{round_}", extra=f"X-User: u{user}\r\n"))
                seen.setdefault(f"u{user}", set()).add(
                    colour_of(response.header("x-upstream-colour"))
                )
        await client.close()
    assert all(len(colours) == 1 for colours in seen.values())
    expected = {
        f"u{u}": "green" if sticky_bucket(b"s2", f"u{u}".encode()) < 5000 else "blue"
        for u in range(30)
    }
    assert {user: colours.pop() for user, colours in seen.items()} == expected


@pytest.mark.parametrize(
    ("extra", "colour"),
    [
        ("X-Bluegreen-Colour: green\r\n", "green"),
        ("X-Bluegreen-Colour: GREEN\r\n", "green"),
        ("Cookie: x=1; bluegreen_colour=green\r\n", "green"),
        ("X-Bluegreen-Colour: purple\r\n", "blue"),
        ("Cookie: not_bluegreen_colour=green\r\n", "blue"),
    ],
    ids=["header", "header-case", "cookie", "invalid-ignored", "similar-cookie-ignored"],
)
async def test_override_pins_the_colour(
    extra: str, colour: str, blue: Upstream, green: Upstream
) -> None:
    access = AccessLines()
    async with running_proxy(proxy_config(blue.address, green.address), access=access) as proxy:
        client = await connect(proxy)
        response = await client.request(get(extra=extra))
        assert colour_of(response.header("x-upstream-colour")) == colour
        await client.close()
    (record,) = access.records()
    assert record["reason"] == ("override" if colour == "green" else "weighted")


async def test_set_routing_applies_live_without_dropping_connections(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        for _ in range(5):
            response = await client.request(get())
            assert colour_of(response.header("x-upstream-colour")) == "blue"
        proxy.set_routing(10_000, salt=b"new")
        for _ in range(5):
            response = await client.request(get())
            assert colour_of(response.header("x-upstream-colour")) == "green"
        proxy.set_routing(0)
        response = await client.request(get())
        assert colour_of(response.header("x-upstream-colour")) == "blue"
        assert len(proxy.connections) == 1  # the same client connection all along
        with pytest.raises(ValueError, match="out of range"):
            proxy.set_routing(10_001)
        await client.close()


async def test_mirror_copies_safe_requests_to_green_and_discards_the_answer(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(blue.address, green.address, routing={"mirror_percent": 100})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        response = await client.request(get("/m?x=1", extra="X-Trace: t1\r\n"))
        assert colour_of(response.header("x-upstream-colour")) == "blue"
        await eventually(lambda: len(green.seen) == 1)
        mirrored = green.seen[0]
        assert (mirrored.method, mirrored.target) == ("GET", "/m?x=1")
        assert mirrored.header("X-Bluegreen-Mirror") == "1"
        assert mirrored.header("X-Trace") == "t1"
        post = await client.request(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
        assert post.status == 200
        await eventually(lambda: proxy.mirrors_in_flight == 0)
        assert len(green.seen) == 1  # writes are never mirrored
        assert proxy.metrics.mirrors_sent == 1
        await client.close()


async def test_mirror_to_a_dead_green_never_affects_the_client(blue: Upstream) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    config = proxy_config(blue.address, dead, routing={"mirror_percent": 100})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        for _ in range(3):
            response = await client.request(get())
            assert response.status == 200
        await eventually(lambda: proxy.metrics.mirrors_failed == 3)
        assert proxy.stats_snapshot().blue.by_class[1] == 3
        await client.close()


async def test_request_header_hook_sees_the_sticky_key_and_the_chosen_colour(
    blue: Upstream, green: Upstream
) -> None:
    calls: list[tuple[bytes | None, Colour]] = []

    def hook(sticky: bytes | None, colour: Colour) -> bytes:
        calls.append((sticky, colour))
        if sticky == b"u1" and colour is Colour.GREEN:
            return b"X-Bluegreen-Flags: new-checkout\r\n"
        return b""

    config = proxy_config(blue.address, green.address, routing={"sticky": {"header": "X-User"}})
    async with running_proxy(config, hook=hook) as proxy:
        client = await connect(proxy)
        await client.request(get(extra="X-User: u1\r\n"))  # weight 0: blue, no flag
        assert blue.seen[-1].header("X-Bluegreen-Flags") is None
        # Pinned to green by the override header: the hook must see green.
        await client.request(get(extra="X-User: u1\r\nX-Bluegreen-Colour: green\r\n"))
        assert green.seen[-1].header("X-Bluegreen-Flags") == "new-checkout"
        await client.request(get())
        assert blue.seen[-1].header("X-Bluegreen-Flags") is None
        await client.close()
    assert calls == [(b"u1", Colour.BLUE), (b"u1", Colour.GREEN), (None, Colour.BLUE)]


async def test_access_log_has_one_line_per_request(blue: Upstream, green: Upstream) -> None:
    access = AccessLines()
    config = proxy_config(blue.address, green.address, routing={"green_weight": 50})
    async with running_proxy(config, access=access) as proxy:
        client = await connect(proxy)
        await client.request(get("/a?q=%22x%22"))
        await client.request(get("/b", extra="X-Bluegreen-Colour: green\r\n"))
        await client.request(b"HEAD /head-body HTTP/1.1\r\nHost: h\r\n\r\n", head=True)
        await client.request(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: zz\r\n\r\n")
        await client.close()
    records = access.records()
    assert [r["path"] for r in records] == ["/a?q=%22x%22", "/b", "/head-body", "/"]
    first = records[0]
    assert set(first) == {
        "timestamp", "event", "colour", "server", "method", "path", "status", "bytes",
        "duration_s", "reason", "error",
    }  # fmt: skip
    assert first["event"] == "access"
    assert first["method"] == "GET"
    assert first["status"] == 200
    assert first["bytes"] > 0
    assert first["reason"] == "weighted"
    assert records[1]["reason"] == "override"
    assert records[1]["colour"] == "green"
    assert records[2]["bytes"] == 0
    assert (records[3]["status"], records[3]["colour"]) == (400, "-")


async def test_metrics_are_exposed_per_colour_in_each_proxys_own_registry(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(blue.address, green.address)
    async with running_proxy(config) as first, running_proxy(config) as second:
        client = await connect(first)
        for path in ("/", "/status/404", "/status/503"):
            await client.request(get(path))
        await client.request(get(extra="X-Bluegreen-Colour: green\r\n"))
        await client.close()
        text = generate_latest(first.registry).decode()
        other = generate_latest(second.registry).decode()
    assert 'bluegreen_requests_total{colour="blue",status_class="2xx"} 1.0' in text
    assert 'bluegreen_requests_total{colour="blue",status_class="4xx"} 1.0' in text
    assert 'bluegreen_requests_total{colour="blue",status_class="5xx"} 1.0' in text
    assert 'bluegreen_requests_total{colour="green",status_class="2xx"} 1.0' in text
    assert 'bluegreen_request_duration_seconds_count{colour="blue"} 3.0' in text
    assert 'bluegreen_request_duration_seconds_bucket{colour="blue",le="+Inf"} 3.0' in text
    assert 'bluegreen_requests_in_flight{colour="blue"} 0.0' in text
    assert "bluegreen_upstream_connect_errors_total" in text
    assert "bluegreen_upstream_pool_waits_total" in text
    assert 'state="idle"' in text
    assert 'bluegreen_requests_total{colour="blue",status_class="2xx"} 0.0' in other


async def test_stats_snapshots_diff_into_a_window(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        await client.request(get("/status/500"))
        before = proxy.stats_snapshot()
        for _ in range(3):
            await client.request(get())
        await client.request(get("/status/502"))
        window = proxy.stats_snapshot().since(before)
        await client.close()
    assert window.blue.requests == 4
    assert window.blue.errors_5xx == 1
    assert window.green.requests == 0
    assert sum(window.blue.duration_counts) == 4
    assert window.blue.duration_quantile(0.5) is not None


async def test_in_flight_and_wait_drained(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        assert await proxy.wait_drained(Colour.BLUE, 0.01)
        client = await connect(proxy)
        await client.send(get("/hold"))
        await asyncio.wait_for(blue.held.wait(), 5)
        assert proxy.in_flight(Colour.BLUE) == 1
        assert proxy.in_flight(Colour.GREEN) == 0
        assert not await proxy.wait_drained(Colour.BLUE, 0.05)
        waiter = asyncio.create_task(proxy.wait_drained(Colour.BLUE, 5))
        blue.release.set()
        assert await waiter
        assert (await client.response()).status == 200
        await client.close()


async def test_mirrors_are_dropped_when_greens_pool_is_busy(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(
        blue.address,
        green.address,
        routing={"mirror_percent": 100},
        limits={"upstream_connections_per_server": 1},
    )
    async with running_proxy(config) as proxy:
        holder = await connect(proxy)
        await holder.send(get("/hold", extra="X-Bluegreen-Colour: green\r\n"))
        await asyncio.wait_for(green.held.wait(), 5)
        client = await connect(proxy)
        response = await client.request(get("/not-delayed"))
        assert response.header("x-upstream-colour") == b"blue"
        assert proxy.metrics.mirrors_dropped == 1
        assert proxy.metrics.mirrors_sent == 0
        green.release.set()
        assert (await holder.response()).status == 200
        for c in (holder, client):
            await c.close()
