"""Hostile and broken clients: malformed requests, limits, slow senders, slow readers."""

from __future__ import annotations

import asyncio

import pytest

from bluegreen.routing import Colour
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


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3x\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n", 405),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    ],
    ids=[
        "length-and-chunked", "length-not-a-number", "length-negative", "two-lengths",
        "obs-fold", "space-before-colon", "nul-in-value", "unchunked-transfer-coding",
        "bad-chunk-size", "no-host", "two-hosts", "http2-version", "connect", "tls-hello",
    ],
)  # fmt: skip
async def test_malformed_request_is_refused_and_never_reaches_upstream(
    request_bytes: bytes, status: int, blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(request_bytes)
        assert response.status == status
        assert response.header("connection") == b"close"
        assert await client.closed()
        await client.close()
    assert blue.seen == []
    assert green.seen == []


async def test_error_after_pipelined_request_comes_after_its_answer(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        await client.send(get("/sleep/0.05") + b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n")
        first = await client.response()
        assert first.body == b"slept blue"
        second = await client.response()
        assert second.status == 400
        assert await client.closed()
        await client.close()


async def test_headers_over_the_limit_are_431(blue: Upstream, green: Upstream) -> None:
    config = proxy_config(blue.address, green.address, limits={"max_header_bytes": "4KiB"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        many = "".join(f"X-H{i}: {'v' * 100}\r\n" for i in range(50))
        response = await client.request(get(extra=many))
        assert response.status == 431
        await client.close()

        client = await connect(proxy)
        one_huge = f"X-Huge: {'v' * 20_000}\r\n"
        response = await client.request(get(extra=one_huge))
        assert response.status == 431
        await client.close()

        client = await connect(proxy)
        response = await client.request(get("/" + "a" * 5000))
        assert response.status == 414
        await client.close()

        client = await connect(proxy)  # just under the limit passes
        response = await client.request(get(extra=f"X-Ok: {'v' * 3000}\r\n"))
        assert response.status == 200
        await client.close()
    assert len(blue.seen) == 1


async def test_declared_body_over_the_limit_is_413_before_anything_is_sent(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(blue.address, green.address, limits={"max_body_bytes": "1KiB"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        response = await client.request(
            b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert response.status == 413
        assert b"limits.max_body_bytes" in response.body
        await client.close()
    assert blue.seen == []


async def test_chunked_body_over_the_limit_is_413(blue: Upstream, green: Upstream) -> None:
    config = proxy_config(blue.address, green.address, limits={"max_body_bytes": "1KiB"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        response = await client.request(
            b"POST /hold HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3
        )
        assert response.status == 413
        assert await client.closed()
        await client.close()
        await eventually(lambda: proxy.in_flight(Colour.BLUE) == 0)


async def test_slow_headers_get_408_after_client_header_timeout(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(blue.address, green.address, timeouts={"client_header": "200ms"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n")  # ...and never the rest
        response = await client.response()
        assert response.status == 408
        assert await client.closed()
        await client.close()


async def test_slowloris_trickle_does_not_extend_the_header_timeout(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(blue.address, green.address, timeouts={"client_header": "300ms"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        await client.send(b"GET / HTTP/1.1\r\n")
        closed = asyncio.create_task(client.closed(wait=5))
        for i in range(100):
            if closed.done():
                break
            await client.send(f"X-{i}: a\r\n".encode())  # a byte stream that never ends
            await asyncio.sleep(0.05)  # the attacker's pace, not synchronisation
        assert await closed
        await client.close()


async def test_connection_that_never_sends_is_closed(blue: Upstream, green: Upstream) -> None:
    config = proxy_config(blue.address, green.address, timeouts={"client_header": "200ms"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        assert await client.closed()
        await client.close()


async def test_idle_keep_alive_connection_is_closed_silently(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(blue.address, green.address, timeouts={"client_keepalive": "200ms"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        assert (await client.request(get())).status == 200
        assert await client.closed()
        assert client.buffer == bytearray()  # no 408, just a close
        await client.close()


async def test_body_stalling_mid_way_gets_408(blue: Upstream, green: Upstream) -> None:
    config = proxy_config(blue.address, green.address, timeouts={"client_body": "200ms"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        await client.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        response = await client.response()
        assert response.status == 408
        assert await client.closed()
        await client.close()
        await eventually(lambda: proxy.in_flight(Colour.BLUE) == 0)


async def test_client_that_stops_reading_is_cut_after_client_send(
    blue: Upstream, green: Upstream
) -> None:
    access = AccessLines()
    config = proxy_config(blue.address, green.address, timeouts={"client_send": "300ms"})
    async with running_proxy(config, access=access) as proxy:
        host, port = proxy.address
        _, writer = await asyncio.open_connection(host, port)
        writer.write(get(f"/bytes/{64 * 1024 * 1024}"))
        await eventually(lambda: proxy.in_flight(Colour.BLUE) == 1)
        # Never read: the proxy pauses the upstream, then gives up on this client.
        await eventually(lambda: proxy.in_flight(Colour.BLUE) == 0)
        await eventually(lambda: all(g.busy == 0 for g in proxy.metrics.pool_gauges()))
        writer.close()
    assert "client stopped reading" in (access.records()[0]["error"] or "")
