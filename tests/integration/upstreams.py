"""Real upstream servers for proxy tests, on 127.0.0.1 port 0.

:func:`start_upstream` runs an aiohttp app that answers with its colour (the
``X-Upstream-Colour`` header, and ``colour`` in JSON bodies) and offers the
endpoints proxy behaviour is tested with:

==========================  =====================================================
``/`` and any unknown path   JSON echo: colour, method, raw target, headers, body length
``/bytes/{n}``               n bytes with Content-Length, streamed in 64 KiB writes
``/chunked/{n}``             n bytes, chunked (no Content-Length)
``/echo-stream``             streams the request body back (chunked) as it arrives
``/upload``                  reads the body; sets ``first_chunk`` on the first piece
                             (``?hold=1``: sets ``held``, waits for ``release`` first)
``/sse``                     server-sent events taken from ``Upstream.sse`` (None ends)
``/ws``                      websocket echo (``close`` closes)
``/hold``                    sets ``held`` then waits for ``release`` before answering
``/sleep/{seconds}``         answers after a delay (a slow application)
``/cookies``                 three Set-Cookie headers
``/status/{code}``           that status (no body for 1xx/204/304)
``/gzip``                    a gzip body with Content-Encoding: gzip
``/head-body``               GET/HEAD with a 5-byte body and Content-Length 5
==========================  =====================================================

:func:`start_raw_upstream` runs a plain asyncio server with a scripted
handler, for byte-level upstream behaviour (closing mid-body, resetting,
sending headers slowly) that a real framework would never produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

CHUNK = 64 * 1024
COLOUR_HEADER = "X-Upstream-Colour"


@dataclass
class Seen:
    """One request as the upstream saw it."""

    method: str
    target: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive)."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        """Every value of a header, in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Upstream:
    """A running aiohttp upstream and the hooks tests drive it with."""

    colour: str
    host: str
    port: int
    runner: web.AppRunner
    seen: list[Seen] = field(default_factory=list)
    sse: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    bytes_sent: int = 0

    @property
    def address(self) -> str:
        """``host:port`` as the proxy's config wants it."""
        return f"{self.host}:{self.port}"

    def hold_next(self) -> None:
        """Make the next ``/hold`` request wait again (set ``held``, wait for ``release``)."""
        self.held.clear()
        self.release.clear()

    async def close(self) -> None:
        """Stop the server."""
        self.release.set()
        await self.runner.cleanup()


def _record(up: Upstream, request: web.Request) -> Seen:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
    seen = Seen(request.method, request.raw_path, headers)
    up.seen.append(seen)
    return seen


def _headers(up: Upstream) -> dict[str, str]:
    return {COLOUR_HEADER: up.colour}


def _app(up: Upstream) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        seen = _record(up, request)
        body = await request.read()
        payload = {
            "colour": up.colour,
            "method": seen.method,
            "target": seen.target,
            "headers": seen.headers,
            "body_length": len(body),
        }
        return web.json_response(payload, headers=_headers(up))

    async def sized(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        n = int(request.match_info["n"])
        response = web.StreamResponse(headers=_headers(up))
        response.content_length = n
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        await _write_pattern(up, response, n)
        await response.write_eof()
        return response

    async def chunked(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        n = int(request.match_info["n"])
        response = web.StreamResponse(headers=_headers(up))
        response.enable_chunked_encoding()
        await response.prepare(request)
        await _write_pattern(up, response, n)
        await response.write_eof()
        return response

    async def echo_stream(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        response = web.StreamResponse(headers=_headers(up))
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for piece in request.content.iter_any():
            await response.write(piece)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        if request.query.get("hold"):  # a busy app that reads the body late
            up.held.set()
            await up.release.wait()
        total = 0
        async for piece in request.content.iter_any():
            if total == 0 and piece:
                up.first_chunk.set()
            total += len(piece)
        return web.json_response({"colour": up.colour, "received": total}, headers=_headers(up))

    async def sse(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        response = web.StreamResponse(headers={**_headers(up), "Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        while (event := await up.sse.get()) is not None:
            await response.write(f"data: {event}\n\n".encode())
        await response.write_eof()
        return response

    async def ws(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        socket_ = web.WebSocketResponse()
        await socket_.prepare(request)
        await socket_.send_str(f"hello from {up.colour}")
        async for message in socket_:
            if message.type == WSMsgType.TEXT:
                if message.data == "close":
                    await socket_.close()
                else:
                    await socket_.send_str(f"{up.colour}: {message.data}")
            elif message.type == WSMsgType.BINARY:
                await socket_.send_bytes(message.data)
        return socket_

    async def hold(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        up.held.set()
        await up.release.wait()
        return web.Response(text=f"released {up.colour}", headers=_headers(up))

    async def sleep(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        await asyncio.sleep(float(request.match_info["seconds"]))
        return web.Response(text=f"slept {up.colour}", headers=_headers(up))

    async def cookies(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        response = web.Response(text="cookies", headers=_headers(up))
        for name in ("a", "b", "c"):
            response.headers.add("Set-Cookie", f"{name}={name}1; Path=/")
        return response

    async def status(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        code = int(request.match_info["code"])
        if code in (204, 304) or code < 200:
            return web.Response(status=code, headers=_headers(up))
        return web.Response(status=code, text=f"status {code}", headers=_headers(up))

    async def gz(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        body = gzip.compress(b"hello gzip " * 100, mtime=0)
        return web.Response(
            body=body,
            headers={**_headers(up), "Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )

    async def head_body(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        return web.Response(body=b"12345", headers=_headers(up))

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/bytes/{n}", sized)
    app.router.add_route("*", "/chunked/{n}", chunked)
    app.router.add_route("*", "/echo-stream", echo_stream)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/hold", hold)
    app.router.add_route("*", "/sleep/{seconds}", sleep)
    app.router.add_route("*", "/cookies", cookies)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/gzip", gz)
    app.router.add_get("/head-body", head_body)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def _write_pattern(up: Upstream, response: web.StreamResponse, n: int) -> None:
    block = bytes(range(256)) * (CHUNK // 256)
    left = n
    while left > 0:
        piece = block if left >= CHUNK else block[:left]
        await response.write(piece)
        up.bytes_sent += len(piece)
        left -= len(piece)


def pattern(n: int) -> bytes:
    """The bytes ``/bytes/{n}`` and ``/chunked/{n}`` send."""
    block = bytes(range(256)) * (CHUNK // 256)
    return (block * (n // CHUNK + 1))[:n]


async def start_upstream(colour: str) -> Upstream:
    """Start an aiohttp upstream on 127.0.0.1 port 0 answering as ``colour``."""
    up = Upstream(colour=colour, host="127.0.0.1", port=0, runner=None)  # type: ignore[arg-type]
    runner = web.AppRunner(_app(up), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    up.runner = runner
    up.port = server.sockets[0].getsockname()[1]
    return up


# --------------------------------------------------------------------------- raw upstreams

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawUpstream:
    """A plain asyncio server running a scripted handler per connection."""

    server: asyncio.Server
    port: int
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)

    @property
    def address(self) -> str:
        """``host:port`` for the proxy's config."""
        return f"127.0.0.1:{self.port}"

    async def close(self) -> None:
        """Stop accepting and close."""
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)


async def start_raw_upstream(handler: RawHandler) -> RawUpstream:
    """Start a scripted upstream on 127.0.0.1 port 0."""
    raw: RawUpstream

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw.connections += 1
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    raw = RawUpstream(server=server, port=server.sockets[0].getsockname()[1])
    return raw


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read one request (head, de-chunked body) from a raw upstream's reader."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    body = b""
    if b"\r\ntransfer-encoding:" in lower:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    elif b"\r\ncontent-length:" in lower:
        start = lower.index(b"\r\ncontent-length:") + len(b"\r\ncontent-length:")
        length = int(lower[start : lower.index(b"\r\n", start)])
        body = await reader.readexactly(length)
    return head, body


def reset(writer: asyncio.StreamWriter) -> None:
    """Close a raw connection with a TCP reset instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def json_body(body: bytes) -> dict[str, object]:
    """Decode an echo response body."""
    value = json.loads(body)
    assert isinstance(value, dict)
    return value
