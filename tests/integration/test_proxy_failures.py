"""Upstream failures: retries, 502/503/504, cut connections, pool limits and expiry."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

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
from tests.integration.upstreams import Upstream, read_request, reset, start_raw_upstream

__all__ = ["blue", "green"]  # fixtures


@pytest.fixture
def dead_address() -> str:
    """An address on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def blackhole_address() -> Iterator[str]:
    """A listener whose accept queue is full: connects hang until they time out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the SYN/accept queues; nobody ever accepts
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield f"127.0.0.1:{port}"
    for filler in fillers:
        filler.close()
    listener.close()


async def test_refused_server_retried_on_another_server_of_the_same_colour(
    dead_address: str, blue: Upstream, green: Upstream
) -> None:
    access = AccessLines()
    config = proxy_config([dead_address, blue.address], green.address)
    async with running_proxy(config, access=access) as proxy:
        client = await connect(proxy)
        response = await client.request(get("/r"))
        assert response.header("x-upstream-colour") == b"blue"
        await client.close()
        snapshot = proxy.stats_snapshot().blue
        assert (snapshot.connect_errors, snapshot.retries) == (1, 1)
    (record,) = access.records()
    assert (record["colour"], record["reason"], record["status"]) == ("blue", "retry", 200)
    assert record["server"] == blue.address


async def test_refused_colour_retried_on_the_other_colour(
    dead_address: str, green: Upstream
) -> None:
    access = AccessLines()
    async with running_proxy(proxy_config(dead_address, green.address), access=access) as proxy:
        client = await connect(proxy)
        response = await client.request(
            b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
        )
        # Nothing reached the dead server, so even a POST is safe to retry.
        assert response.status == 200
        assert response.header("x-upstream-colour") == b"green"
        await client.close()
        assert proxy.in_flight(Colour.BLUE) == proxy.in_flight(Colour.GREEN) == 0
    (record,) = access.records()
    assert (record["colour"], record["reason"]) == ("green", "retry")


async def test_both_colours_refused_is_502(dead_address: str) -> None:
    async with running_proxy(proxy_config(dead_address, dead_address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert response.status == 502
        assert b"upstream" in response.body
        # The request was read completely: the connection stays usable.
        assert response.header("connection") is None
        again = await client.request(get())
        assert again.status == 502
        await client.close()


def _stale_after_first_upstream() -> tuple[list[int], object]:
    """A raw upstream answering the first request on each connection only.

    A second request on the same connection is read and the connection
    closed without a byte: what a keep-alive connection the app just timed
    out looks like from the proxy.
    """
    counts: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        counts.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await read_request(reader)
        writer.close()

    return counts, handler


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (get("/idempotent"), 200),
        (b"PUT /put HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", 200),
        (b"POST /post HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", 502),
    ],
    ids=["get-replayed", "put-replayed", "post-not-replayed"],
)
async def test_stale_pooled_connection(request_bytes: bytes, status: int, green: Upstream) -> None:
    counts, handler = _stale_after_first_upstream()
    raw = await start_raw_upstream(handler)  # type: ignore[arg-type]
    async with running_proxy(proxy_config(raw.address, green.address)) as proxy:
        client = await connect(proxy)
        assert (await client.request(get("/warm-up"))).status == 200
        response = await client.request(request_bytes)
        assert response.status == status
        if status == 200:
            assert len(counts) == 2  # replayed...
            assert raw.connections == 2  # ...on a fresh connection
        await client.close()
    await raw.close()


async def test_upstream_closing_idle_connection_is_noticed_by_the_pool(green: Upstream) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # closes the kept-alive connection right away

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, green.address)) as proxy:
        client = await connect(proxy)
        for _ in range(3):
            assert (await client.request(get())).body == b"ok"
            await eventually(lambda: sum(g.idle for g in proxy.metrics.pool_gauges()) == 0)
        assert raw.connections == 3
        await client.close()
    await raw.close()


@pytest.mark.parametrize(
    ("upstream_bytes", "framing"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 40, "length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "chunked"),
    ],
    ids=["content-length", "chunked"],
)
@pytest.mark.parametrize("how", ["close", "reset"])
async def test_upstream_dying_mid_body_cuts_the_client(
    upstream_bytes: bytes, framing: str, how: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(upstream_bytes)
        await writer.drain()
        if how == "reset":
            reset(writer)
        else:
            writer.close()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert response.status == 200
        assert response.framing == framing
        assert not response.complete  # short body / no last chunk: never complete-looking
        assert await client.closed()
        await client.close()
    await raw.close()


async def test_upstream_dying_mid_body_resets_a_close_delimited_client() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.close()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        host, port = proxy.address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        # An HTTP/1.0 body ends at close, so a clean close would look complete: reset.
        with pytest.raises(ConnectionResetError):
            await _read_to_end(reader)
        writer.close()
    await raw.close()


async def _read_to_end(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def test_slow_upstream_is_504(blue: Upstream, green: Upstream) -> None:
    access = AccessLines()
    config = proxy_config(blue.address, green.address, timeouts={"upstream_read": "200ms"})
    async with running_proxy(config, access=access) as proxy:
        client = await connect(proxy)
        response = await client.request(get("/sleep/3"))
        assert response.status == 504
        fine = await client.request(get("/fine"))
        assert fine.status == 200
        await client.close()
        assert proxy.stats_snapshot().blue.timeouts == 1
    records = access.records()
    assert records[0]["status"] == 504
    assert records[0]["error"] == "upstream read timeout"


async def test_upstream_stalling_mid_body_is_cut() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await reader.read()  # then silence

    raw = await start_raw_upstream(handler)
    config = proxy_config(raw.address, raw.address, timeouts={"upstream_read": "200ms"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert (response.status, response.complete, response.body) == (200, False, b"abc")
        await client.close()
    await raw.close()


async def test_connect_timeout_is_504(blackhole_address: str) -> None:
    config = proxy_config(blackhole_address, blackhole_address, timeouts={"connect": "200ms"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert response.status == 504
        await client.close()
        assert proxy.stats_snapshot().blue.timeouts == 1


async def test_pool_limit_queues_then_rejects_with_503(blue: Upstream, green: Upstream) -> None:
    config = proxy_config(
        blue.address,
        green.address,
        limits={"upstream_connections_per_server": 1, "upstream_queue_per_server": 1},
    )
    async with running_proxy(config) as proxy:
        first, second, third = [await connect(proxy) for _ in range(3)]
        await first.send(get("/hold"))
        await asyncio.wait_for(blue.held.wait(), 5)
        await second.send(get("/queued"))
        await eventually(lambda: proxy.stats_snapshot().blue.pool_waits == 1)
        rejected = await third.request(get("/rejected"))
        assert rejected.status == 503
        assert b"limits.upstream_queue_per_server" in rejected.body
        assert rejected.header("connection") is None  # a complete request: keep-alive
        blue.release.set()
        assert (await first.response()).status == 200
        assert (await second.response()).status == 200
        snapshot = proxy.stats_snapshot().blue
        assert (snapshot.pool_waits, snapshot.pool_rejections) == (1, 1)
        assert [
            g.idle + g.busy for g in proxy.metrics.pool_gauges() if g.colour is Colour.BLUE
        ] == [1]
        for client in (first, second, third):
            await client.close()


async def test_waiting_too_long_for_a_pooled_connection_is_503(
    blue: Upstream, green: Upstream
) -> None:
    config = proxy_config(
        blue.address,
        green.address,
        limits={"upstream_connections_per_server": 1},
        timeouts={"connect": "200ms"},
    )
    async with running_proxy(config) as proxy:
        holder, waiter = await connect(proxy), await connect(proxy)
        await holder.send(get("/hold"))
        await asyncio.wait_for(blue.held.wait(), 5)
        response = await waiter.request(get("/waits"))
        assert response.status == 503
        assert b"timeouts.connect" in response.body
        blue.release.set()
        assert (await holder.response()).status == 200
        await holder.close()
        await waiter.close()


async def test_idle_upstream_connections_expire(green: Upstream) -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()  # returns at EOF: the proxy closed its idle connection
        closed.set()

    raw = await start_raw_upstream(handler)
    config = proxy_config(raw.address, green.address, timeouts={"upstream_idle": "100ms"})
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        assert (await client.request(get())).status == 200
        await asyncio.wait_for(closed.wait(), 5)
        assert sum(g.idle for g in proxy.metrics.pool_gauges()) == 0
        await client.close()
    await raw.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    ],
    ids=["not-http", "duplicate-length", "unsolicited-101"],
)
async def test_invalid_upstream_response_is_502(garbage: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(garbage)
        await writer.drain()
        await reader.read()

    raw = await start_raw_upstream(handler)
    async with running_proxy(proxy_config(raw.address, raw.address)) as proxy:
        client = await connect(proxy)
        response = await client.request(get())
        assert response.status == 502
        await client.close()
    await raw.close()


async def test_client_leaving_mid_request_frees_the_upstream(
    blue: Upstream, green: Upstream
) -> None:
    access = AccessLines()
    async with running_proxy(proxy_config(blue.address, green.address), access=access) as proxy:
        client = await connect(proxy)
        await client.send(get("/hold"))
        await asyncio.wait_for(blue.held.wait(), 5)
        assert proxy.in_flight(Colour.BLUE) == 1
        await client.close()
        await eventually(lambda: proxy.in_flight(Colour.BLUE) == 0)
        assert all(g.busy == 0 for g in proxy.metrics.pool_gauges())
        await eventually(lambda: bool(access.records()))
    assert access.records()[0]["status"] == 499
