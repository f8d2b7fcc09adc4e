"""Retries of idempotent requests: a connection lost before any response byte, and 5xx answers.

Green is a scripted raw upstream (it fails on purpose); blue is the aiohttp
one. Requests reach green through a sticky key whose bucket is below green's
weight, so blue keeps a weight above 0 unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bluegreen.config import Config
from bluegreen.controller.stats import ColourTraffic
from bluegreen.routing import Colour, sticky_bucket
from tests.integration.proxy_fixtures import (
    AccessLines,
    blue,
    connect,
    proxy_config,
    running_proxy,
)
from tests.integration.upstreams import (
    RawHandler,
    RawUpstream,
    Upstream,
    read_request,
    reset,
    start_raw_upstream,
    start_upstream,
)

__all__ = ["blue"]  # fixtures

STICKY = "X-User"
FIVE_XX = (0, 0, 0, 0, 1)  # ColourSnapshot.by_class: 1xx..5xx
ONE_2XX = (0, 1, 0, 0, 0)


def routed(
    blue: str, green: str | list[str], *, green_weight: float = 50, **sections: Any
) -> Config:
    """Both colours take traffic; a request with :func:`green_user` goes to green."""
    routing = {"green_weight": green_weight, "sticky": {"header": STICKY}}
    return proxy_config(blue, green, routing=routing, **sections)


def green_user(config: Config) -> str:
    """A sticky key that lands on green under ``config``'s weight and salt."""
    salt = config.routing.salt.encode()
    for i in range(10_000):
        key = f"user-{i}"
        if sticky_bucket(salt, key.encode()) < config.routing.green_weight_bp:
            return key
    raise AssertionError("no key lands on green")


def to_green(
    config: Config, method: str = "GET", target: str = "/r", body: bytes | None = None
) -> bytes:
    """A request the proxy routes to green (sticky key)."""
    head = f"{method} {target} HTTP/1.1\r\nHost: t\r\n{STICKY}: {green_user(config)}\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def answering(
    status: int, body: bytes = b"green failed", *, framing: str = "length"
) -> tuple[list[bytes], RawHandler]:
    """A raw upstream answering every request with ``status`` (and the heads it read)."""
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            heads.append(head)
            if head.startswith(b"HEAD "):
                writer.write(
                    b"HTTP/1.1 %d Oops\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
                )
            elif framing == "chunked":
                writer.write(b"HTTP/1.1 %d Oops\r\nTransfer-Encoding: chunked\r\n\r\n" % status)
                for at in range(0, len(body), 16_384):
                    piece = body[at : at + 16_384]
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                writer.write(b"0\r\n\r\n")
            elif framing == "close":
                writer.write(b"HTTP/1.1 %d Oops\r\nConnection: close\r\n\r\n%s" % (status, body))
                await writer.drain()
                return
            else:
                writer.write(
                    b"HTTP/1.1 %d Oops\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)
                )
            await writer.drain()

    return heads, handler


# --------------------------------------------------------------------------- 5xx answers


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
async def test_idempotent_request_answered_503_gets_the_other_colours_answer(
    blue: Upstream, method: str
) -> None:
    heads, handler = answering(503)
    green = await start_raw_upstream(handler)
    access = AccessLines()
    config = routed(blue.address, green.address)
    async with running_proxy(config, access=access) as proxy:
        client = await connect(proxy)
        response = await client.request(to_green(config, method), head=method == "HEAD")
        assert response.status == 200
        assert response.header("x-upstream-colour") == b"blue"
        # The connection is fine for the next request.
        again = await client.request(to_green(config, method), head=method == "HEAD")
        assert (again.status, again.header("x-upstream-colour")) == (200, b"blue")
        await client.close()
        stats = proxy.stats_snapshot()
        # Health analysis still sees green failing: each 503 counted as green's answer,
        # once (a retry counts as a failed request there too, so not also as a retry).
        assert stats.green.by_class == (0, 0, 0, 0, 2)
        assert stats.blue.by_class == (0, 2, 0, 0, 0)
        assert (stats.green.retries, stats.blue.retries) == (0, 0)
        analysed = ColourTraffic.of(stats.green).counters()
        assert (analysed.requests, analysed.errors_5xx, analysed.connect_errors) == (2, 2, 0)
        assert proxy.in_flight(Colour.BLUE) == proxy.in_flight(Colour.GREEN) == 0
    await green.close()
    assert len(heads) == 2
    assert [(s.method, s.target) for s in blue.seen] == [(method, "/r")] * 2
    assert blue.seen[0].header(STICKY) == green_user(config)
    records = access.records()
    assert len(records) == 2  # one line per request: what the client got
    assert (records[0]["colour"], records[0]["reason"], records[0]["status"]) == (
        "blue",
        "retry",
        200,
    )
    assert records[0]["server"] == blue.address
    assert records[0]["error"] == "green answered 503"


def _large_put(config: Config) -> bytes:
    return to_green(config, "PUT", body=b"p" * (100 * 1024))  # beyond the 64 KiB kept


@pytest.mark.parametrize(
    ("build", "status", "sections"),
    [
        (lambda c: to_green(c, "POST", body=b"order"), 503, {}),
        (lambda c: to_green(c, "PATCH", body=b"order"), 503, {}),
        (_large_put, 503, {}),
        (lambda c: b"GET /r HTTP/1.1\r\nHost: t\r\nX-Bluegreen-Colour: green\r\n\r\n", 503, {}),
        (to_green, 503, {"green_weight": 100}),
        (to_green, 503, {"retries": {"statuses": []}}),
        (to_green, 500, {}),
        (to_green, 501, {"retries": {"statuses": [500]}}),
    ],
    ids=[
        "post",
        "patch",
        "body-beyond-replay-limit",
        "pinned-by-override",
        "blue-at-weight-0",
        "statuses-off",
        "500-not-in-default",
        "501-not-listed",
    ],
)
async def test_answers_that_pass_through(
    blue: Upstream, build: Any, status: int, sections: dict[str, Any]
) -> None:
    heads, handler = answering(status)
    green = await start_raw_upstream(handler)
    config = routed(blue.address, green.address, **sections)
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        response = await client.request(build(config))
        assert (response.status, response.body) == (status, b"green failed")
        await client.close()
        stats = proxy.stats_snapshot()
        assert stats.green.by_class == FIVE_XX
        assert stats.blue.requests == 0
        assert stats.green.retries == 0
    await green.close()
    assert len(heads) == 1
    assert blue.seen == []


async def test_a_retry_is_not_retried_again(blue: Upstream) -> None:
    _, handler = answering(503)
    green = await start_raw_upstream(handler)
    access = AccessLines()
    config = routed(blue.address, green.address)
    async with running_proxy(config, access=access) as proxy:
        client = await connect(proxy)
        response = await client.request(to_green(config, target="/status/503"))
        assert (response.status, response.header("x-upstream-colour")) == (503, b"blue")
        await client.close()
        stats = proxy.stats_snapshot()
        assert stats.green.by_class == stats.blue.by_class == FIVE_XX
    await green.close()
    (record,) = access.records()
    assert (record["colour"], record["reason"], record["status"]) == ("blue", "retry", 503)


@pytest.mark.parametrize(
    ("framing", "connections"),
    [("chunked", 1), ("length", 1), ("close", 2)],
    ids=["chunked-kept", "length-kept", "close-delimited-closed"],
)
async def test_a_large_failed_answer_is_discarded(
    blue: Upstream, framing: str, connections: int
) -> None:
    heads, handler = answering(503, b"e" * 1_000_000, framing=framing)
    green = await start_raw_upstream(handler)
    config = routed(blue.address, green.address)
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        for _ in range(2):
            response = await client.request(to_green(config))
            assert (response.status, response.header("x-upstream-colour")) == (200, b"blue")
            assert b"eee" not in response.body
        # A request for blue on the same client connection after the discarded answers.
        plain = await client.request(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
        assert plain.status == 200
        await client.close()
        assert proxy.stats_snapshot().green.by_class == (0, 0, 0, 0, 2)
        assert sum(g.busy for g in proxy.metrics.pool_gauges()) == 0
    await green.close()
    assert len(heads) == 2
    # Read to its end, a framed answer leaves its connection reusable; a close-delimited one cannot.
    assert green.connections == connections


async def test_a_failed_answer_cut_short_is_retried_all_the_same(blue: Upstream) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 503 Oops\r\nContent-Length: 100\r\n\r\nabc")
        await writer.drain()  # then closes: 97 bytes short

    green = await start_raw_upstream(handler)
    config = routed(blue.address, green.address)
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        response = await client.request(to_green(config))
        assert (response.status, response.header("x-upstream-colour")) == (200, b"blue")
        await client.close()
        assert proxy.stats_snapshot().green.by_class == FIVE_XX
    await green.close()


# --------------------------------------------------------------------------- lost connections


def closing_before_answer(how: str) -> RawHandler:
    """A raw upstream that reads a request head, then closes (or resets) without a byte."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if how == "reset":
            reset(writer)

    return handler


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_idempotent_request_lost_on_a_fresh_connection_goes_to_the_other_colour(
    blue: Upstream, how: str
) -> None:
    green = await start_raw_upstream(closing_before_answer(how))
    access = AccessLines()
    config = routed(blue.address, green.address)
    async with running_proxy(config, access=access) as proxy:
        client = await connect(proxy)
        response = await client.request(to_green(config, "PUT", body=b"same twice"))
        assert (response.status, response.header("x-upstream-colour")) == (200, b"blue")
        await client.close()
        stats = proxy.stats_snapshot()
        assert (stats.green.retries, stats.blue.by_class) == (1, ONE_2XX)
        analysed = ColourTraffic.of(stats.green).counters()  # a failed request to green
        assert (analysed.requests, analysed.connect_errors) == (1, 1)
        assert proxy.in_flight(Colour.BLUE) == proxy.in_flight(Colour.GREEN) == 0
    await green.close()
    assert green.connections == 1  # fresh: not the stale-pool replay on the same server
    assert [(s.method, s.target) for s in blue.seen] == [("PUT", "/r")]
    (record,) = access.records()
    assert (record["colour"], record["reason"], record["status"]) == ("blue", "retry", 200)
    assert record["error"] == "upstream closed before responding"


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_non_idempotent_request_lost_is_502(blue: Upstream, how: str) -> None:
    green = await start_raw_upstream(closing_before_answer(how))
    config = routed(blue.address, green.address)
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        response = await client.request(to_green(config, "POST", body=b"order"))
        assert response.status == 502
        await client.close()
        assert proxy.stats_snapshot().green.retries == 0
    await green.close()
    assert blue.seen == []


async def test_pinned_request_lost_stays_on_its_colour(blue: Upstream) -> None:
    pinned = b"GET /r HTTP/1.1\r\nHost: t\r\nX-Bluegreen-Colour: green\r\n\r\n"
    lost = await start_raw_upstream(closing_before_answer("close"))
    other_green = await start_upstream("green")
    try:
        # One green server: nowhere to go on green, and blue is not what was asked for.
        async with running_proxy(routed(blue.address, lost.address)) as proxy:
            client = await connect(proxy)
            assert (await client.request(pinned)).status == 502
            await client.close()
        # Two green servers: the other one answers.
        config = routed(blue.address, [lost.address, other_green.address])
        async with running_proxy(config) as proxy:
            client = await connect(proxy)
            response = await client.request(pinned)
            assert (response.status, response.header("x-upstream-colour")) == (200, b"green")
            await client.close()
            assert proxy.stats_snapshot().green.retries == 1
        assert blue.seen == []
    finally:
        await other_green.close()
        await lost.close()


async def test_unpinned_request_lost_tries_another_server_of_the_colour_first(
    blue: Upstream,
) -> None:
    lost = await start_raw_upstream(closing_before_answer("close"))
    other_green = await start_upstream("green")
    try:
        config = routed(blue.address, [lost.address, other_green.address])
        async with running_proxy(config) as proxy:
            client = await connect(proxy)
            response = await client.request(to_green(config))
            assert (response.status, response.header("x-upstream-colour")) == (200, b"green")
            await client.close()
        assert blue.seen == []
        assert len(other_green.seen) == 1
    finally:
        await other_green.close()
        await lost.close()


async def test_response_started_then_lost_cuts_the_client_without_retry(blue: Upstream) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        await writer.drain()

    green = await start_raw_upstream(handler)
    config = routed(blue.address, green.address)
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        response = await client.request(to_green(config))
        assert (response.status, response.complete, response.body) == (200, False, b"abc")
        assert await client.closed()
        await client.close()
        assert proxy.stats_snapshot().green.retries == 0
    await green.close()
    assert blue.seen == []


async def test_request_in_flight_when_green_dies_is_answered_by_blue(blue: Upstream) -> None:
    """What ``bluegreen demo --kill green`` does to a GET on a pooled connection."""
    dying: RawUpstream

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)
        dying.server.close()  # no more listening, like a killed process...
        reset(writer)  # ...whose sockets the kernel resets

    dying = await start_raw_upstream(handler)
    config = routed(blue.address, dying.address)
    async with running_proxy(config) as proxy:
        client = await connect(proxy)
        assert (await client.request(to_green(config))).body == b"ok"
        response = await client.request(to_green(config))
        assert (response.status, response.header("x-upstream-colour")) == (200, b"blue")
        await client.close()
        stats = proxy.stats_snapshot()
        assert (stats.green.retries, stats.green.connect_errors) == (1, 1)
    await dying.close()
