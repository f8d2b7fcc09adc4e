"""HTTP semantics through the proxy, byte for byte, against real upstreams on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import socket

from bluegreen.proxy import ProxyServer
from bluegreen.routing import Colour
from tests.integration.proxy_fixtures import (
    blue,
    connect,
    green,
    proxy_config,
    running_proxy,
)
from tests.integration.rawhttp import get
from tests.integration.upstreams import (
    Upstream,
    json_body,
    read_request,
    start_raw_upstream,
)

__all__ = ["blue", "green"]  # fixtures


async def test_request_reaches_blue_and_response_comes_back(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get("/hello"))
        assert response.status == 200
        assert response.header("x-upstream-colour") == b"blue"
        assert json_body(response.body)["target"] == "/hello"
        await client.close()


async def test_hop_by_hop_request_headers_are_dropped(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        request = (
            b"GET /h HTTP/1.1\r\nHost: app.test\r\n"
            b"Connection: keep-alive, X-Secret-Hop\r\n"
            b"X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
            b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
            b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n"
            b"Upgrade: websocket\r\nX-End-To-End: kept\r\n\r\n"
        )
        response = await client.request(request)
        seen = blue.seen[-1]
        names = {k.lower() for k, _ in seen.headers}
        for dropped in (
            "connection", "x-secret-hop", "keep-alive", "proxy-authorization",
            "proxy-connection", "te", "trailer", "upgrade",
        ):  # fmt: skip
            assert dropped not in names, dropped
        assert seen.header("X-End-To-End") == "kept"
        assert response.status == 200
        await client.close()


async def test_hop_by_hop_response_headers_are_dropped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\n"
                b"X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n"
                b"Trailer: X-T\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\nok"
            )
            await writer.drain()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert response.body == b"ok"
        names = {k.lower() for k, _ in response.headers}
        for dropped in (b"x-hop", b"keep-alive", b"proxy-authenticate", b"trailer", b"upgrade"):
            assert dropped not in names
        assert response.header("connection") is None
        assert response.header("x-kept") == b"yes"
        await client.close()
    await raw.close()


async def test_forwarding_headers_appended_and_host_preserved(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        await client.request(
            b"GET / HTTP/1.1\r\nHost: shop.example:8443\r\n"
            b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.2\r\n"
            b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n"
            b"Forwarded: for=203.0.113.7\r\n\r\n"
        )
        seen = blue.seen[-1]
        assert seen.all("Host") == ["shop.example:8443"]
        assert seen.all("X-Forwarded-For") == ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
        assert seen.all("X-Forwarded-Proto") == ["http"]
        assert seen.all("X-Forwarded-Host") == ["shop.example:8443"]
        assert seen.all("Forwarded") == ["for=203.0.113.7, for=127.0.0.1;proto=http"]
        await client.request(get("/2", host="a.test"))
        seen = blue.seen[-1]
        assert seen.all("X-Forwarded-For") == ["127.0.0.1"]
        assert seen.all("Forwarded") == ["for=127.0.0.1;proto=http"]
        await client.close()


async def test_request_target_forwarded_byte_for_byte() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            heads.append(head)
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    raw = await start_raw_upstream(handler)
    targets = [
        b"/a%2Fb/%28x%29",
        b"/a/./b/../c",
        b"//double//slash/",
        b"/q?x=%2F&y=a+b&z=%zz",
        b"/%7Euser/caf%C3%A9;p=1",
        b"*",
    ]
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        client = await connect(proxy)
        for target in targets:
            method = b"OPTIONS" if target == b"*" else b"GET"
            response = await client.request(
                method + b" " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            assert response.status == 204
            assert heads[-1].split(b"\r\n", 1)[0] == method + b" " + target + b" HTTP/1.1"
        await client.close()
    await raw.close()


async def test_absolute_form_target_becomes_origin_form_with_its_host() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        heads.append(head)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(
            b"GET http://api.test:81/p/%2F?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n"
        )
        assert response.status == 204
        lines = heads[0].split(b"\r\n")
        assert lines[0] == b"GET /p/%2F?q=1 HTTP/1.1"
        assert b"Host: api.test:81" in lines
        assert b"Host: other.test" not in lines
        await client.close()
    await raw.close()


async def test_gzip_body_and_content_headers_untouched(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get("/gzip", extra="Accept-Encoding: gzip\r\n"))
        assert response.header("content-encoding") == b"gzip"
        assert int(response.header("content-length") or 0) == len(response.body)
        assert gzip.decompress(response.body) == b"hello gzip " * 100
        assert blue.seen[-1].header("Accept-Encoding") == "gzip"
        await client.close()


async def test_repeated_set_cookie_headers_all_kept_in_order(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get("/cookies"))
        assert response.all("set-cookie") == [b"a=a1; Path=/", b"b=b1; Path=/", b"c=c1; Path=/"]
        await client.close()


async def test_head_response_has_no_body_and_connection_stays_usable(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        for _ in range(3):
            head = await client.request(b"HEAD /head-body HTTP/1.1\r\nHost: h\r\n\r\n", head=True)
            assert head.status == 200
            assert head.header("content-length") == b"5"
            after = await client.request(get("/head-body"))
            assert after.body == b"12345"  # nothing of a body leaked after the HEAD head
        await client.close()
        # The upstream connection was reused across HEADs: one pooled connection.
        gauges = proxy.metrics.pool_gauges()
        assert sum(g.idle for g in gauges) == 1


async def test_head_against_chunked_upstream_keeps_both_connections_in_sync() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                )
            await writer.drain()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        client = await connect(proxy)
        head = await client.request(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", head=True)
        assert head.status == 200
        response = await client.request(get())
        assert response.body == b"abc"
        assert raw.connections == 1
        await client.close()
    await raw.close()


async def test_204_and_304_carry_no_body_and_keep_the_connection(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        for code in (204, 304, 204):
            response = await client.request(get(f"/status/{code}"))
            assert response.status == code
            assert response.header("transfer-encoding") is None
        ok = await client.request(get("/after"))
        assert ok.status == 200
        await client.close()


async def test_keep_alive_reuses_one_upstream_connection(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        for i in range(20):
            response = await client.request(get(f"/{i}"))
            assert json_body(response.body)["target"] == f"/{i}"
        assert sum(g.idle + g.busy for g in proxy.metrics.pool_gauges()) == 1
        await client.close()


async def test_pipelined_requests_answered_in_order(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        batch = b"".join(
            [
                get("/sleep/0.05"),
                b"POST /p1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
                b"HEAD /head-body HTTP/1.1\r\nHost: h\r\n\r\n",
                get("/p3"),
                b"POST /p4 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nhi\r\n0\r\n\r\n",
            ]
        )
        await client.send(batch)
        first = await client.response()
        assert first.body == b"slept blue"
        second = json_body((await client.response()).body)
        assert (second["target"], second["body_length"]) == ("/p1", 3)
        third = await client.response(head=True)
        assert third.header("content-length") == b"5"
        assert json_body((await client.response()).body)["target"] == "/p3"
        fifth = json_body((await client.response()).body)
        assert (fifth["target"], fifth["body_length"]) == ("/p4", 2)
        await client.close()


async def test_http10_client_gets_close_unless_it_asked_for_keep_alive(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(b"GET /one HTTP/1.0\r\n\r\n")
        assert response.status == 200
        assert response.header("connection") == b"close"
        assert await client.closed()
        await client.close()
        await client.close()
        # HTTP/1.0 without Host: the upstream still gets a Host (the proxy's address).
        host, port = proxy.address
        assert blue.seen[-1].header("Host") == f"{host}:{port}"

        client = await connect(proxy)
        for _ in range(2):
            response = await client.request(b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert response.header("connection") == b"keep-alive"
        await client.close()


async def test_chunked_upstream_is_close_delimited_for_http10(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(
            b"GET /chunked/70000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        )
        assert response.framing == "close"
        assert response.header("transfer-encoding") is None
        assert response.header("connection") == b"close"
        assert len(response.body) == 70000
        await client.close()


async def test_chunked_upstream_is_rechunked_for_http11(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get("/chunked/200000"))
        assert response.framing == "chunked"
        assert response.complete
        assert len(response.body) == 200000
        again = await client.request(get("/again"))
        assert again.status == 200
        await client.close()


async def test_close_delimited_upstream_body_is_chunked_for_http11_and_complete() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for piece in (b"one ", b"two ", b"three"):
            writer.write(piece)
            await writer.drain()
        writer.close()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert response.framing == "chunked"
        assert response.complete
        assert response.body == b"one two three"
        # The client connection survives the upstream's close.
        second = await client.request(get())
        assert second.body == b"one two three"
        await client.close()
    await raw.close()


async def test_transfer_codings_other_than_chunked_are_kept(blue: Upstream) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = gzip.compress(b"abc", mtime=0)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            + b"%x\r\n" % len(body)
            + body
            + b"\r\n0\r\n\r\n"
        )
        await writer.drain()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, blue.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert response.header("transfer-encoding") == b"gzip, chunked"
        assert gzip.decompress(response.body) == b"abc"
        await client.close()
    await raw.close()


async def test_expect_100_continue_is_answered_before_the_body(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await client.read_until(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        response = await client.request(b"hello")
        assert json_body(response.body)["received"] == 5
        # The proxy answered the expectation; upstream never saw Expect.
        assert blue.seen[-1].header("Expect") is None
        await client.close()


async def test_unknown_expectation_is_417(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get(extra="Expect: teapot\r\n"))
        assert response.status == 417
        await client.close()


async def test_upstream_interim_responses_are_swallowed() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
        )
        await writer.drain()
        await reader.read()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert (response.status, response.body) == (200, b"body")
        await client.close()
    await raw.close()


async def test_reason_phrase_of_upstream_is_kept() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 299 Very Custom\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert response.raw_head.startswith(b"HTTP/1.1 299 Very Custom\r\n")
        await client.close()
    await raw.close()


async def test_nagle_is_off_on_client_and_upstream_sockets(blue: Upstream, green: Upstream) -> None:
    # A listener made without IPPROTO_TCP: asyncio then leaves Nagle on for
    # accepted sockets, so the proxy must switch it off itself.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    proxy = ProxyServer(proxy_config(blue.address, green.address))
    await proxy.start(listener)
    try:
        client = await connect(proxy)
        await client.request(get())
        (conn,) = proxy.connections
        assert conn.transport is not None
        accepted = conn.transport.get_extra_info("socket")
        assert accepted.proto == 0
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        (server,) = proxy.sets[Colour.BLUE].servers
        (pooled,) = server.idle
        assert pooled.transport is not None
        upstream_sock = pooled.transport.get_extra_info("socket")
        assert upstream_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await client.close()
    finally:
        await proxy.stop()


async def test_drain_closes_idle_finishes_in_flight_and_cuts_after_the_timeout(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        idle = await connect(proxy)
        assert (await idle.request(get())).status == 200
        slow = await connect(proxy)
        await slow.send(get("/hold"))
        await asyncio.wait_for(blue.held.wait(), 5)
        finished = await proxy.drain(0.2)
        assert finished is False  # the held request outlived the drain timeout
        assert await idle.closed()
        assert await slow.closed()
        assert proxy.in_flight(Colour.BLUE) == 0
        for c in (idle, slow):
            await c.close()
