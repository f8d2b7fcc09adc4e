"""The data plane's shortcuts give byte for byte what the general code gives.

Two shortcuts are checked against a reference:

* response heads are filtered from their raw bytes
  (:func:`bluegreen.http_head.response_head`) instead of through llhttp's
  per-header callbacks; the reference below is the per-header code the proxy
  used before, fed by llhttp itself;
* the usual request head skips most of ``_head_general``; the reference is
  ``_head_general`` itself, run on the same bytes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluegreen.config import Config, with_overrides
from bluegreen.http_head import (
    COLON_SP,
    CRLF,
    RESP_CONNECTION,
    RESP_CONTENT_LENGTH,
    RESP_TRANSFER_ENCODING,
    RESP_UPGRADE,
    RESPONSE_HEADER_CODES,
    join_values,
    named_by_connection,
    remove_headers,
    response_head,
    status_line,
)
from bluegreen.proxy import ClientConnection, Exchange, ProxyServer

# --------------------------------------------------------------------------- responses


class _Reference:
    """The per-header response code (name/value callbacks from llhttp)."""

    def __init__(self) -> None:
        self.reason = b""
        self.lines: list[bytes] = []
        self.te: bytes | None = None
        self.conn: bytes | None = None
        self.upgrade: bytes | None = None
        self.has_length = False
        self.done = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.done:
            return
        code = RESPONSE_HEADER_CODES.get(name.lower())
        if code is None:
            self.lines += (name, COLON_SP, value, CRLF)
        elif code == RESP_CONTENT_LENGTH:
            self.has_length = True
            self.lines += (name, COLON_SP, value, CRLF)
        elif code == RESP_TRANSFER_ENCODING:
            self.te = join_values(self.te, value)
        elif code == RESP_CONNECTION:
            self.conn = join_values(self.conn, value)
        elif code == RESP_UPGRADE:
            self.upgrade = value

    def on_headers_complete(self) -> None:
        self.done = True


def reference(head: bytes) -> tuple[bytes, bool, bytes | None, bytes | None] | None:
    """What the per-header code forwards, or None when llhttp refuses the head."""
    ref = _Reference()
    parser = httptools.HttpResponseParser(ref)
    try:
        parser.feed_data(head + b"\r\n")
    except httptools.HttpParserUpgrade:
        pass  # a 101: the head is complete
    except httptools.HttpParserError:
        return None
    if not ref.done:
        return None
    lines = ref.lines
    if ref.conn is not None:
        named = named_by_connection(ref.conn)
        if named:
            lines = remove_headers(lines, named)
    out = status_line(parser.get_status_code(), ref.reason) + b"".join(lines)
    return out, ref.has_length, ref.te, ref.upgrade


def check(head: bytes) -> None:
    expected = reference(head)
    if expected is None:
        return  # llhttp refuses it: the proxy never filters it
    status = int(head[9:12])
    assert response_head(head, status) == expected


NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/html\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n"
    b'ETag: "6765-400"\r\nAccept-Ranges: bytes\r\n'
)


@pytest.mark.parametrize(
    "head",
    [
        NGINX,
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n",
        b"HTTP/1.1 204 \r\nX-A: 1\r\n",
        b"HTTP/1.0 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n",
        b"HTTP/1.1 200  Two spaces\r\nA: b\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\n",
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nX: y\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret, close\r\nx-secret: 1\r\nX-Keep: 2\r\n",
        b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        b"HTTP/1.1 200 OK\r\nX:no-space\r\nContent-Length: 0\r\n",
        b"HTTP/1.1 200 OK\r\nX:  two\r\nY:\ttab\r\nZ: trailing \r\nE:\r\nF: \r\n",
        b"HTTP/1.1 200 OK\r\nConnection:close\r\nContent-Length: 0\r\n",
        b"HTTP/1.1 200 OK\r\nTE: trailers\r\nTrailer: X\r\nProxy-Authenticate: Basic\r\n",
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: keep-alive\r\n",
        b"HTTP/1.1 200 OK\r\nX-Connection: no\r\nContent-Lengthy: 1\r\nTEx: 1\r\n",
        b"HTTP/1.1 200 OK\r\nX-Colon: a: b: c\r\nDate: 12:00:00\r\n",
        b"HTTP/1.1 200 OK\r\nX-Obs: caf\xc3\xa9 \xff\r\n",
    ],
    ids=[
        "nginx", "no-headers", "no-reason", "empty-reason", "http10", "two-spaces",
        "te-twice", "keep-alive", "connection-names", "101", "no-space", "odd-spacing",
        "connection-no-space", "hop-headers", "set-cookie", "lookalikes", "colons", "obs-text",
    ],
)  # fmt: skip
def test_response_head_matches_the_per_header_code(head: bytes) -> None:
    assert reference(head) is not None  # each case is a head llhttp accepts
    check(head)


_NAMES = st.sampled_from(
    [
        b"Connection", b"connection", b"CONNECTION", b"Keep-Alive", b"Proxy-Connection",
        b"Proxy-Authenticate", b"Proxy-Authorization", b"TE", b"te", b"Trailer",
        b"Transfer-Encoding", b"Upgrade", b"Content-Length", b"content-length",
        b"X-A", b"x-a", b"Set-Cookie", b"Date", b"Server", b"TEx", b"Connection-X",
    ]
)  # fmt: skip
_VALUES = st.sampled_from(
    [
        b"keep-alive", b"close", b"Upgrade", b"x-a", b"X-A, close", b"chunked", b"gzip",
        b"12", b"a: b", b"", b"v ", b"12:00:00",
    ]
)  # fmt: skip
_SPACING = st.sampled_from([b": ", b":", b":  ", b":\t", b": \t"])
_STATUS_LINES = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 200 ", b"HTTP/1.0 200 OK", b"HTTP/1.1 101 X"]
)


@settings(max_examples=400, deadline=None)
@given(
    _STATUS_LINES,
    st.lists(st.tuples(_NAMES, _SPACING, _VALUES), max_size=8),
)
def test_response_head_matches_the_per_header_code_on_generated_heads(
    first: bytes, headers: list[tuple[bytes, bytes, bytes]]
) -> None:
    head = first + b"\r\n" + b"".join(n + sep + v + b"\r\n" for n, sep, v in headers)
    check(head)


# --------------------------------------------------------------------------- requests


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.1.2.3", 4000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        return

    def close(self) -> None:
        return

    def abort(self) -> None:
        return

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        return

    def resume_reading(self) -> None:
        return


class _Recorder(ClientConnection):
    """Records the exchanges a connection makes instead of starting them."""

    general = False

    def __init__(self, proxy: ProxyServer) -> None:
        super().__init__(proxy)
        self.seen: list[Exchange] = []

    def on_headers_complete(self) -> None:
        if self.general:
            self._in_head = False
            self._head_general(self._parser, self._url)
        else:
            super().on_headers_complete()

    def _begin(self, ex: Exchange) -> None:
        self.seen.append(ex)


class _GeneralOnly(_Recorder):
    general = True


_FIELDS = (
    "method", "url", "head", "http11", "keep_alive", "upgrade", "chunked", "has_body",
    "expect_continue", "sticky", "override", "set_cookie",
)  # fmt: skip


def _exchanges(cls: type[_Recorder], proxy: ProxyServer, data: bytes) -> list[Any]:
    """What the connection made of ``data``: its exchanges, and what it answered itself."""
    conn = cls(proxy)
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]  # enough of a transport
    conn.data_received(data)
    return [tuple(getattr(ex, f) for f in _FIELDS) for ex in conn.seen] + transport.written


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x?y=%2F HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nCookie: bluegreen_colour=green; s=1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nCookie: sid=k1\r\nCookie: x=2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nForwarded: for=x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-Host: e\r\n"
        b"\r\n",
        b"GET http://b:81/p HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Bluegreen-Colour: green\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
    ids=[
        "plain", "headers", "keep-alive", "keep-alive-case", "close", "connection-names",
        "http10-keep-alive", "http10", "http10-no-host", "post", "post-empty",
        "override-cookie", "sticky-cookies", "forwarded", "hop-headers", "absolute",
        "override-header", "upgrade", "two-hosts", "no-host", "pipelined",
    ],
)  # fmt: skip
@pytest.mark.parametrize("sticky_cookie", [None, "sid"], ids=["no-sticky-cookie", "sticky-cookie"])
async def test_usual_request_shortcut_matches_the_general_code(
    request_bytes: bytes, sticky_cookie: str | None
) -> None:
    config = with_overrides(Config(), blue=["127.0.0.1:9001"], green=["127.0.0.1:9002"])
    if sticky_cookie is not None:
        sticky = replace(config.routing.sticky, cookie=sticky_cookie)
        config = replace(config, routing=replace(config.routing, sticky=sticky))
    proxy = ProxyServer(config)  # needs the running loop of this async test
    fast = _exchanges(_Recorder, proxy, request_bytes)
    general = _exchanges(_GeneralOnly, proxy, request_bytes)
    assert fast
    assert fast == general
