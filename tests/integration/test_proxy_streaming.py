"""Bodies stream through the proxy in both directions, with flow control, never buffered whole."""

from __future__ import annotations

import asyncio
import tracemalloc

import aiohttp

from bluegreen.proxy import ClientConnection, ProxyServer
from bluegreen.routing import Colour
from tests.integration.proxy_fixtures import (
    blue,
    connect,
    eventually,
    green,
    proxy_config,
    running_proxy,
)
from tests.integration.rawhttp import get
from tests.integration.upstreams import Upstream, json_body

__all__ = ["blue", "green"]  # fixtures

MB = 1024 * 1024


async def test_chunked_request_body_reaches_upstream_while_client_still_sends(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        # The upstream has the first chunk although the request is far from over.
        await asyncio.wait_for(blue.first_chunk.wait(), 5)
        await client.send(b"6\r\nsecond\r\n0\r\n\r\n")
        response = await client.response()
        assert json_body(response.body)["received"] == 11
        await client.close()


async def test_request_and_response_stream_at_the_same_time(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        await client.send(
            b"POST /echo-stream HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await client.send(b"4\r\nping\r\n")
        head = await client.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        # The echo of the first piece arrives before the request is finished.
        assert await client.read_until(b"ping\r\n") == b"4\r\nping\r\n"
        await client.send(b"4\r\npong\r\n")
        assert await client.read_until(b"pong\r\n") == b"4\r\npong\r\n"
        await client.send(b"0\r\n\r\n")
        assert await client.read_until(b"0\r\n\r\n") == b"0\r\n\r\n"
        await client.close()


async def test_server_sent_events_arrive_one_by_one(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        await client.send(get("/sse", extra="Accept: text/event-stream\r\n"))
        head = await client.read_until(b"\r\n\r\n")
        assert b"text/event-stream" in head
        for i in range(3):
            # The next event is only produced after the previous one was read here.
            await blue.sse.put(f"event {i}")
            assert (await client.read_until(b"\n\n")).endswith(f"data: event {i}\n\n".encode())
        await blue.sse.put(None)
        assert (await client.read_until(b"0\r\n\r\n")).endswith(b"0\r\n\r\n")
        await client.close()


async def test_websocket_upgrade_and_frames_both_ways(blue: Upstream, green: Upstream) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        host, port = proxy.address
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://{host}:{port}/ws") as ws,
        ):
            assert (await ws.receive_str(timeout=5)) == "hello from blue"
            await ws.send_str("hi")
            assert (await ws.receive_str(timeout=5)) == "blue: hi"
            payload = bytes(range(256)) * 300
            await ws.send_bytes(payload)
            assert (await ws.receive_bytes(timeout=5)) == payload
            assert proxy.in_flight(Colour.BLUE) == 1  # an open tunnel is in flight
            await ws.send_str("close")
            message = await ws.receive(timeout=5)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await eventually(lambda: proxy.in_flight(Colour.BLUE) == 0)
        seen = blue.seen[-1]
        assert seen.header("Upgrade") == "websocket"
        assert (seen.header("Connection") or "").lower() == "upgrade"


async def test_upgrade_refused_by_upstream_is_a_normal_response_then_close(
    blue: Upstream, green: Upstream
) -> None:
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(
            get("/plain", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n")
        )
        assert response.status == 200
        assert response.header("connection") == b"close"
        assert await client.closed()
        await client.close()


def _client_connection(proxy: ProxyServer) -> ClientConnection:
    (conn,) = proxy.connections
    return conn


async def _drain_body(client_reader: asyncio.StreamReader, n: int) -> int:
    got = 0
    while got < n:
        data = await client_reader.read(256 * 1024)
        if not data:
            break
        got += len(data)
    return got


async def test_100_mb_download_streams_with_flat_memory(blue: Upstream, green: Upstream) -> None:
    size = 100 * MB
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        host, port = proxy.address
        reader, writer = await asyncio.open_connection(host, port)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            writer.write(get(f"/bytes/{size}"))
            head = await reader.readuntil(b"\r\n\r\n")
            assert f"Content-Length: {size}".encode() in head
            # Read nothing for a while: the proxy must stop reading the upstream
            # instead of buffering what the client does not take.
            conn = _client_connection(proxy)
            await eventually(
                lambda: (
                    conn._active is not None
                    and conn._active.upstream is not None
                    and conn._active.upstream._reading_paused
                )
            )
            assert conn.transport is not None
            assert conn.transport.get_write_buffer_size() < 1 * MB
            sent_while_paused = blue.bytes_sent
            assert sent_while_paused < 50 * MB
            got = await asyncio.wait_for(_drain_body(reader, size), 60)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert got == size
        # Everything in this process (upstream, proxy, client) stayed small.
        assert peak < 16 * MB, f"peak traced memory {peak / MB:.1f} MiB"
        writer.close()
        await writer.wait_closed()


async def test_100_mb_upload_streams_with_flat_memory(blue: Upstream, green: Upstream) -> None:
    size = 100 * MB
    piece = b"x" * MB
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        host, port = proxy.address
        reader, writer = await asyncio.open_connection(host, port)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            writer.write(
                f"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n".encode()
            )
            for _ in range(size // MB):
                writer.write(piece)
                await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            body = await reader.read(1024)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert head.startswith(b"HTTP/1.1 200")
        assert f'"received": {size}'.encode() in body
        assert peak < 24 * MB, f"peak traced memory {peak / MB:.1f} MiB"
        writer.close()
        await writer.wait_closed()


async def test_upload_to_a_slow_upstream_pauses_the_client(blue: Upstream, green: Upstream) -> None:
    size = 64 * MB
    piece = b"z" * MB
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        host, port = proxy.address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"POST /upload?hold=1 HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        written = 0

        async def send_all() -> None:
            nonlocal written
            for _ in range(size // MB):
                writer.write(piece)
                await writer.drain()
                written += MB

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            sender = asyncio.create_task(send_all())
            await asyncio.wait_for(blue.held.wait(), 5)
            conn = _client_connection(proxy)
            # The upstream reads nothing: the proxy stops reading the client...
            await eventually(lambda: bool(conn._paused))
            # ...so the client cannot get rid of its 64 MiB. (Without flow control
            # loopback swallows it in a fraction of a second, into the proxy's memory.)
            done, _ = await asyncio.wait({sender}, timeout=1.0)
            assert not done
            assert written < 48 * MB
            active = conn._active
            assert active is not None
            assert active.upstream is not None
            assert active.upstream.transport is not None
            assert active.upstream.transport.get_write_buffer_size() < 2 * MB
            blue.release.set()
            await asyncio.wait_for(sender, 60)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * MB, f"peak traced memory {peak / MB:.1f} MiB"
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        body = await reader.read(1024)
        assert head.startswith(b"HTTP/1.1 200")
        assert f'"received": {size}'.encode() in body
        writer.close()
        await writer.wait_closed()


async def test_chunked_upload_beyond_backlog_while_upstream_connects(
    blue: Upstream, green: Upstream
) -> None:
    # The first request opens the connection: its body is held (bounded) meanwhile.
    async with running_proxy(proxy_config(blue.address, green.address)) as proxy:
        client = await connect(proxy)
        body = b"".join(b"%x\r\n%s\r\n" % (10_000, b"y" * 10_000) for _ in range(50))
        response = await client.request(
            b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body
            + b"0\r\n\r\n"
        )
        assert json_body(response.body)["received"] == 500_000
        await client.close()
