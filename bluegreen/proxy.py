"""The data plane: client connections, one exchange per request, and the ProxyServer.

Theory of operation
-------------------
Everything on the hot path is an ``asyncio.Protocol`` callback; nothing awaits
anything but sockets. A :class:`ClientConnection` feeds what it reads to an
llhttp request parser (httptools). The parser calls back:

* ``on_url`` / ``on_header`` collect the head. Headers are classified with
  one dict lookup (:mod:`bluegreen.http_head`); ordinary ones are copied
  into a flat ``[name, ": ", value, CRLF, ...]`` list untouched and in order.
* ``on_headers_complete`` validates the head, picks the routing inputs
  (override, sticky key), builds the upstream head in one ``join`` and
  creates an :class:`Exchange`. The first exchange on a connection is
  started at once; later ones (pipelining) queue behind it, and the
  connection stops reading until the queue drains, which bounds what a
  pipelining client can make the proxy hold to one socket read.
* ``on_body`` hands body bytes to the exchange (re-chunked when the client
  sent chunks); ``on_message_complete`` ends the request.

Starting an exchange asks the :class:`~bluegreen.routing.Router` for a colour,
then the colour's :class:`~bluegreen.upstream.ServerSet` for a server, then
the server's pool for a connection: an idle one right away, or later (a new
connection, or a wait in the bounded queue). Request bytes produced during
one client read are joined and written once; response bytes produced during
one upstream read (head and first body piece together) are joined and
written once.

Flow control is explicit in both directions: when the client's transport
asks us to pause writing, the exchange's upstream connection stops reading,
and when the upstream's transport is full, the client connection stops
reading. Memory per connection is therefore bounded by socket buffers and
the transports' high-water marks, whatever the body size.

Timers: each connection owns one timer handle whose deadline is a float
moved forward as things happen (:class:`~bluegreen.upstream.TimedProtocol`);
what a deadline means is decided when it fires, from the connection's state
(idle keep-alive, slow head -> 408, stalled body -> 408, client not reading
-> cut).

Retries (like nginx's ``proxy_next_upstream``) send a request once more,
with routing reason ``retry``:

* a connection that could not be opened: any method (nothing reached the
  upstream), on another server of the same colour, else the other colour;
  counted in the failing colour's ``retries``;
* an idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) whose
  connection closed or reset before any response byte: on a fresh
  connection to the same server first when it was a pooled one (it was
  probably stale), else on another server of the colour, else the other
  colour, unless the override pinned the colour; its bytes are kept for this
  up to 64 KiB (``_REPLAY_LIMIT``), a longer one gets the 502. Counted in
  ``retries`` too (the stale-connection replay is not);
* an idempotent request, complete and within that 64 KiB, answered with one
  of ``retries.statuses`` (502, 503, 504 by default): on the other colour if
  its weight is above 0, unless the override pinned the colour or it was a
  retry already. The failed answer is counted in its colour's stats as the
  5xx it was (health analysis must see it; not also in ``retries``, which
  the analysis counts as failures too), read and discarded; the client gets
  the second one.

Non-idempotent requests that reached an upstream are never sent twice, and
mirrored copies are never retried.

Once a response has started, an upstream failure cuts the client connection
instead of finishing the response: the client sees a short body or a
missing last chunk, never a complete-looking response.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Final, NoReturn, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from mypy_extensions import mypyc_attr
from prometheus_client import CollectorRegistry

from bluegreen.config import Address, Config, require_upstreams
from bluegreen.errors import (
    ConfigError,
    UpstreamBusyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from bluegreen.http_head import (
    COLON_SP,
    CONTINUE_100,
    CRLF,
    DETAIL_BAD_GATEWAY,
    DETAIL_BAD_REQUEST,
    DETAIL_BODY_TIMEOUT,
    DETAIL_BODY_TOO_LARGE,
    DETAIL_CONNECT_TIMEOUT,
    DETAIL_EXPECT,
    DETAIL_HEADER_TIMEOUT,
    DETAIL_HEADERS_TOO_LARGE,
    DETAIL_METHOD,
    DETAIL_NO_HOST,
    DETAIL_SHUTTING_DOWN,
    DETAIL_TIMEOUT,
    DETAIL_UPSTREAM_BROKEN,
    DETAIL_URI_TOO_LONG,
    DETAIL_VERSION,
    HTTP11,
    IDEMPOTENT_METHODS,
    LAST_CHUNK,
    REQ_CONNECTION,
    REQ_CONTENT_LENGTH,
    REQ_COOKIE,
    REQ_EXPECT,
    REQ_FORWARDED,
    REQ_HOP,
    REQ_HOST,
    REQ_OVERRIDE,
    REQ_STICKY,
    REQ_STICKY_OVERRIDE,
    REQ_TRANSFER_ENCODING,
    REQ_UPGRADE,
    REQ_XF_REPLACED,
    REQ_XFF,
    chunked_transfer_encoding,
    cookie_value,
    error_response,
    forwarded_node,
    join_values,
    named_by_connection,
    remove_headers,
    request_header_codes,
    set_cookie_line,
    split_absolute_target,
)
from bluegreen.logs import AccessLog
from bluegreen.metrics import ColourStats, PoolGauge, ProxyMetrics, StatsSnapshot
from bluegreen.routing import BASIS_POINTS, Colour, Reason, Router, parse_colour
from bluegreen.upstream import (
    FRAMING_LENGTH,
    FRAMING_NONE,
    PoolSettings,
    ServerSet,
    TimedProtocol,
    UpstreamConnection,
    UpstreamServer,
    set_nodelay,
)

# Extra request header lines for one request, from its sticky key (feature
# flags use this); each line must end with CRLF.
RequestHeaderHook = Callable[[bytes | None, Colour], bytes]

# Client connection modes.
_HTTP: Final = 0  # parsing requests
_UPGRADING: Final = 1  # an upgrade request was sent upstream; waiting for its answer
_TUNNEL: Final = 2  # after a 101: bytes pass both ways untouched
_LINGER: Final = 3  # answered and closing: our side is shut, reading and dropping
_CLOSED: Final = 4

# Why reading from a client is paused (bit flags; reading resumes at 0).
_PAUSE_PIPELINE: Final = 1  # a later request waits behind the current one
_PAUSE_UPSTREAM: Final = 2  # the upstream's socket buffer is full
_PAUSE_BACKLOG: Final = 4  # body bytes wait for an upstream connection

# How the response body is written to the client.
_BODY_NONE: Final = 0
_BODY_PASS: Final = 1  # as read: Content-Length, or close-delimited for HTTP/1.0
_BODY_CHUNK: Final = 2  # re-chunked for an HTTP/1.1 client

_BACKLOG_LIMIT: Final = 64 * 1024  # body bytes held while no upstream connection is ready
_REPLAY_LIMIT: Final = 64 * 1024  # idempotent request bytes kept to send again (retries)
_LINGER_TIMEOUT: Final = 5.0  # nginx lingering_timeout
_MIRROR_MARK: Final = b"X-Bluegreen-Mirror: 1\r\n\r\n"
_XF_PROTO: Final = b"X-Forwarded-Proto: http\r\n"
# Enum members as plain names: class-attribute access on an Enum is slow in 3.11.
_RETRY: Final = Reason.RETRY


class _Refused(Exception):  # an internal signal to stop the parser; never escapes
    """Raised in a parser callback when a request must be refused."""


def create_listener(
    address: Address, *, reuse_port: bool = False, backlog: int = 1024
) -> socket.socket:
    """The proxy's listening socket (the one place listeners are made).

    ``reuse_port`` sets SO_REUSEPORT so several worker processes can each
    bind the same address and let the kernel spread connections.
    """
    infos = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Exchange:
    """One request and its response; the unit of routing, retry, metrics and logging."""

    __slots__ = (
        "body_received",
        "chunked",
        "client",
        "closing",
        "colour",
        "done",
        "error",
        "expect_continue",
        "has_body",
        "head",
        "http11",
        "is_head",
        "keep_alive",
        "method",
        "out",
        "out_size",
        "override",
        "pending_fail",
        "reason",
        "replay",
        "replay_size",
        "req_done",
        "resp_mode",
        "resp_out",
        "resp_started",
        "retried",
        "sent",
        "server",
        "set_cookie",
        "stale_retried",
        "stats",
        "status",
        "sticky",
        "t0",
        "tunnel_open",
        "upgrade",
        "upstream",
        "url",
        "waiting",
    )

    def __init__(
        self,
        client: ClientConnection,
        method: bytes,
        url: bytes,
        head: bytes,
        http11: bool,
        keep_alive: bool,
        upgrade: bool,
        chunked: bool,
        has_body: bool,
        expect_continue: bool,
        sticky: bytes | None,
        override: Colour | None,
        set_cookie: bytes | None,
        t0: float,
    ) -> None:
        # Positional on purpose: one of these per request, and keyword
        # passing costs about a microsecond more.
        self.client = client
        self.method = method
        self.url = url
        self.head = head
        self.http11 = http11
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.chunked = chunked
        self.has_body = has_body
        self.expect_continue = expect_continue
        self.sticky = sticky
        self.override = override
        self.set_cookie = set_cookie
        self.t0 = t0
        self.is_head = method == b"HEAD"
        self.req_done = False
        self.out: list[bytes] = [head]  # request bytes not yet written upstream
        self.out_size = 0
        self.body_received = 0
        self.upstream: UpstreamConnection | None = None
        self.server: UpstreamServer | None = None
        self.colour: Colour | None = None
        self.reason: Reason | None = None
        self.stats: ColourStats | None = None
        self.status = 0
        self.sent = 0
        self.resp_mode = _BODY_NONE
        self.resp_out: list[bytes] = []
        self.resp_started = False
        self.closing = False
        self.done = False
        self.tunnel_open = False
        self.retried = False
        self.stale_retried = False
        self.replay: list[bytes] | None = None
        self.replay_size = 0
        self.waiting = False
        self.pending_fail: tuple[int, str] | None = None
        self.error: str | None = None

    # ------------------------------------------------------------ routing and connecting

    def start(self, now: float) -> None:
        """Route the request and get it an upstream connection (``now``: loop time)."""
        if self.pending_fail is not None:
            self.fail(*self.pending_fail)
            return
        proxy = self.client.proxy
        router = proxy.router
        colour, reason = router.choose(self.sticky, self.override)
        hook = proxy.request_header_hook
        if hook is not None:
            # Extra header lines (feature flags) depend on the colour chosen;
            # nothing has been written yet, so the head can still grow.
            extra = hook(self.sticky, colour)
            if extra:
                head = self.head[:-2] + extra + CRLF
                self.head = head
                self.out[0] = head
        server_set, stats = proxy.lanes[colour]
        server = server_set.only or server_set.pick()
        # _route for a request that has no colour yet.
        stats.in_flight += 1
        self.stats = stats
        self.colour = colour
        self.reason = reason
        self.server = server
        if (
            router.mirror_bp
            and not self.has_body
            and not self.upgrade
            and router.should_mirror(self.method, colour)
        ):
            proxy.mirror(self.head, is_head=self.is_head)
        # _acquire, inline.
        try:
            conn = server.acquire(self)
        except UpstreamBusyError as exc:
            self.fail(503, exc.detail, error=str(exc))
            return
        if conn is None:
            self.waiting = True
        else:
            self.attach(conn, now)

    def _route(self, colour: Colour, reason: Reason, server: UpstreamServer) -> None:
        proxy = self.client.proxy
        old = self.stats
        stats = proxy.metrics.colours[colour]
        stats.in_flight += 1
        if old is not None:
            old.in_flight -= 1
            if old.in_flight == 0 and proxy.drain_waiters:
                proxy.notify_drained(old.colour)
        self.stats = stats
        self.colour = colour
        self.reason = reason
        self.server = server

    def _acquire(self, now: float, *, fresh: bool) -> None:
        server = self.server
        assert server is not None  # noqa: S101  # routed first
        try:
            conn = server.acquire(self, fresh=fresh)
        except UpstreamBusyError as exc:
            self.fail(503, exc.detail, error=str(exc))
            return
        if conn is None:
            self.waiting = True
        else:
            self.attach(conn, now)

    def upstream_ready(self, conn: UpstreamConnection) -> bool:
        """Pool callback: a connection is ready (False if this request is gone)."""
        if self.done:
            return False
        self.waiting = False
        self.attach(conn, self.client._loop.time())
        return True

    def upstream_failed(self, error: UpstreamError) -> None:
        """Pool callback: no connection (refused, timed out, queue full or timed out)."""
        self.waiting = False
        if self.done:
            return
        if isinstance(error, UpstreamBusyError):
            self.fail(503, error.detail, error=str(error))
        elif isinstance(error, UpstreamTimeoutError):
            self.fail(504, DETAIL_CONNECT_TIMEOUT, error=str(error))
        elif not self.retried:
            # Nothing reached the upstream: safe to retry any method, once.
            target = self._next_upstream(pinned=False)
            assert target is not None  # noqa: S101  # unpinned: the other colour at least
            self._retry(*target, str(error))
        else:
            self.fail(502, DETAIL_BAD_GATEWAY, error=str(error))

    def _next_upstream(self, *, pinned: bool) -> tuple[Colour, UpstreamServer] | None:
        """Where a failed attempt goes next: another server of its colour, else the other colour.

        ``pinned``: the override chose the colour; None when it has no other server.
        """
        proxy = self.client.proxy
        colour = self.colour
        assert colour is not None  # noqa: S101  # routed first
        assert self.server is not None  # noqa: S101
        server = proxy.sets[colour].other_than(self.server)
        if server is not None:
            return colour, server
        if pinned:
            return None
        colour = colour.other
        return colour, proxy.sets[colour].pick()

    def _retry(
        self, colour: Colour, server: UpstreamServer, error: str, *, answered: bool = False
    ) -> None:
        """Send the request once more to ``server``.

        The failed attempt counts as a retry of its colour, unless it was
        ``answered``: then it was counted as the answer it got, and health
        analysis (which takes a retry for one more failed request) must not
        count it twice.
        """
        assert self.stats is not None  # noqa: S101  # routed first
        self.retried = True
        if not answered:
            self.stats.retries += 1
        self.error = error
        self._requeue_written()
        # A lost connection never reports its buffer drained.
        self.client.resume(_PAUSE_UPSTREAM)
        self._route(colour, _RETRY, server)
        self._acquire(self.client._loop.time(), fresh=False)

    def _requeue_written(self) -> None:
        """Put the request bytes already written (kept for retries) back in front, to send again."""
        replay = self.replay
        if replay is not None:
            self.out[0:0] = replay  # what was written, before what was not yet
            self.replay = None
            self.replay_size = 0

    def attach(self, conn: UpstreamConnection, now: float) -> None:
        """Start using ``conn``: write the head and any body bytes already read."""
        client = self.client
        self.upstream = conn
        conn.begin(self, now)
        if self.method in IDEMPOTENT_METHODS:
            self.replay = []  # keep what is written, to send it again (retries)
        else:
            self.replay = None
        if client._write_paused:
            conn.pause_reading()
        if not self.has_body and not self.upgrade:
            # The head is the whole request: write it now (flush_request, shortened).
            out = self.out
            if out:
                head = out[0]
                out.clear()
                if self.replay is not None:
                    self.replay.append(head)
                    self.replay_size = len(head)
                conn.transport.write(head)  # type: ignore[union-attr]  # connected
            return
        if self.expect_continue:
            self.expect_continue = False
            if not self.body_received and client.transport is not None:
                client.transport.write(CONTINUE_100)
        if not client._feeding:
            self.flush_request()

    # ------------------------------------------------------------ request bytes

    def request_body(self, body: bytes) -> None:
        """Body bytes from the client (de-chunked by the parser)."""
        n = len(body)
        total = self.body_received + n
        self.body_received = total
        client = self.client
        if total > client.proxy.max_body_bytes:
            client.refuse(413, DETAIL_BODY_TOO_LARGE)
        if self.done:
            return
        if self.chunked:
            self.out += (b"%x\r\n" % n, body, CRLF)
        else:
            self.out.append(body)
        if self.upstream is None:
            self.out_size += n
            if self.out_size > _BACKLOG_LIMIT:
                client.pause(_PAUSE_BACKLOG)

    def request_complete(self) -> None:
        """The client sent the whole request."""
        self.req_done = True
        if self.chunked and not self.done:
            self.out.append(LAST_CHUNK)

    def tunnel_out(self, data: bytes) -> None:
        """Raw bytes the client sent after an upgrade request."""
        self.out.append(data)
        if self.upstream is None:
            self.out_size += len(data)
            if self.out_size > _BACKLOG_LIMIT:
                self.client.pause(_PAUSE_BACKLOG)

    def flush_request(self) -> None:
        """Write pending request bytes to the upstream in one write."""
        out = self.out
        conn = self.upstream
        if not out or conn is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        replay = self.replay
        if replay is not None:
            replay.append(data)
            size = self.replay_size = self.replay_size + len(data)
            if size > _REPLAY_LIMIT:
                self.replay = None
        conn.transport.write(data)  # type: ignore[union-attr]  # attached conns are connected
        if self.body_received:
            conn.touch(self.client._loop.time())
        if self.out_size:
            self.out_size = 0
            self.client.resume(_PAUSE_BACKLOG)

    # ------------------------------------------------------------ response (UpstreamUser)

    def on_response_head(
        self,
        status: int,
        head: bytes,
        framing: int,
        upgrade: bytes | None,
        transfer_encoding: bytes | None,
    ) -> None:
        """Build the client's response head (written with the first body bytes)."""
        if status >= 500 and self._retry_answer(status):
            return  # read on and discard: response_done sends the request to the other colour
        client = self.client
        self.status = status
        self.resp_started = True
        out = self.resp_out
        out.append(head)
        if status == 101:
            out += (b"Connection: upgrade\r\nUpgrade: ", upgrade or b"", CRLF, CRLF)
            return
        closing = (
            not self.keep_alive
            or not self.req_done
            or self.upgrade
            or client._closing
            or client.proxy.draining
        )
        if framing == FRAMING_LENGTH:
            mode = _BODY_PASS
        elif framing == FRAMING_NONE:
            mode = _BODY_NONE
        elif self.http11:
            mode = _BODY_CHUNK
            out.append(chunked_transfer_encoding(transfer_encoding))
        else:
            mode = _BODY_PASS  # HTTP/1.0 client: the body ends when we close
            closing = True
        if closing:
            out.append(b"Connection: close\r\n")
        elif not self.http11:
            out.append(b"Connection: keep-alive\r\n")
        if self.set_cookie is not None:
            out.append(self.set_cookie)
        out.append(CRLF)
        self.resp_mode = mode
        self.closing = closing

    def on_response_body(self, chunk: bytes) -> None:
        """A piece of the response body."""
        mode = self.resp_mode
        if mode == _BODY_PASS:
            self.sent += len(chunk)
            self.resp_out.append(chunk)
        elif mode == _BODY_CHUNK:
            n = len(chunk)
            self.sent += n
            self.resp_out += (b"%x\r\n" % n, chunk, CRLF)
        else:
            self.sent += len(chunk)

    def on_response_complete(self) -> None:
        """The upstream finished the response."""
        if self.resp_mode == _BODY_CHUNK:
            self.resp_out.append(LAST_CHUNK)

    def flush_response(self) -> None:
        """Write what one upstream read produced, in one write."""
        out = self.resp_out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            client = self.client
            transport = client.transport
            if transport is not None and client._mode != _CLOSED:  # ClientConnection.write
                transport.write(data)

    def response_done(self, now: float) -> None:
        """The response is written; the upstream connection is pooled or closed."""
        self.upstream = None
        if not self.resp_started:  # a failed answer was read and discarded
            self._retry_other_colour()
            return
        self.finish()
        self.client.exchange_done(self, now)

    def _retry_answer(self, status: int) -> bool:
        """Whether a 5xx answer is one to discard and ask the other colour instead.

        When it is, the answer is counted in its colour's stats now; while it
        is read and discarded, ``status`` holds it and ``resp_started`` is False.
        """
        proxy = self.client.proxy
        if (
            status not in proxy.retry_statuses
            or self.replay is None  # not idempotent, or more than _REPLAY_LIMIT bytes
            or not self.req_done
            or self.override is not None
            or self.reason is _RETRY
            or self.upgrade
        ):
            return False
        colour = self.colour
        assert colour is not None  # noqa: S101  # routed before any answer
        if proxy.router.weight_bp(colour.other) <= 0:
            return False
        stats = self.stats
        assert stats is not None  # noqa: S101  # routed before any answer
        stats.observe(status, monotonic() - self.t0)
        self.status = status
        self.error = f"{colour} answered {status}"
        return True

    def _retry_other_colour(self) -> None:
        """Send the request whose answer was discarded to the other colour."""
        if self.done:
            return
        assert self.colour is not None  # noqa: S101  # routed before any answer
        self.status = 0
        self.sent = 0
        colour = self.colour.other
        self._retry(colour, self.client.proxy.sets[colour].pick(), self.error or "", answered=True)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The upstream connection closed, reset or broke before the response ended."""
        self.upstream = None
        if self.done:
            return
        if self.resp_started:
            self.cut("upstream closed the connection mid-response")
            return
        if self.status:  # the connection of a discarded answer: retry all the same
            self._retry_other_colour()
            return
        error = "upstream closed before responding"
        replay = self.replay
        if replay is not None and not conn.got_bytes:
            if conn.requests and not self.stale_retried:
                # A pooled connection the upstream had probably closed: again on a fresh one.
                self.stale_retried = True
                self._requeue_written()
                self.reason = _RETRY
                self._acquire(self.client._loop.time(), fresh=True)
                return
            if not self.retried:
                # Idempotent, and nothing came back: safe to send once more elsewhere.
                target = self._next_upstream(pinned=self.override is not None)
                if target is not None:
                    self._retry(*target, error)
                    return
        self.fail(502, DETAIL_UPSTREAM_BROKEN, error=error)

    def upstream_timeout(self, conn: UpstreamConnection) -> None:
        """The upstream was silent for timeouts.upstream_read."""
        self.upstream = None
        if self.done:
            return
        if self.resp_started:
            self.cut("upstream timed out mid-response")
        elif self.status:  # while a failed answer was discarded
            self._retry_other_colour()
        else:
            self.fail(504, DETAIL_TIMEOUT, error="upstream read timeout")

    def upstream_write_paused(self) -> None:
        """The upstream's buffer is full: stop reading the client."""
        self.client.pause(_PAUSE_UPSTREAM)

    def upstream_write_resumed(self) -> None:
        """The upstream's buffer drained."""
        self.client.resume(_PAUSE_UPSTREAM)

    # ------------------------------------------------------------ tunnels (websockets)

    def start_tunnel(self, conn: UpstreamConnection, rest: bytes) -> None:
        """The upstream switched protocols: pass bytes both ways from now on."""
        if rest:
            self.resp_out.append(rest)
        self.flush_response()
        client = self.client
        if client._mode == _CLOSED:
            conn.close()
            self.finish()
            return
        self.tunnel_open = True
        client.enter_tunnel(conn)
        self.flush_request()
        self.finish()  # log the 101 now; in-flight ends when the tunnel closes

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the upstream side of the tunnel."""
        self.client.write(data)

    def tunnel_closed(self) -> None:
        """The upstream side of the tunnel closed: close the client side."""
        self.upstream = None
        self.client.close()

    def end_tunnel(self) -> None:
        """The tunnel is over (either side closed)."""
        if not self.tunnel_open:
            return
        self.tunnel_open = False
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.close()
        stats = self.stats
        if stats is not None:
            stats.in_flight -= 1
            proxy = self.client.proxy
            if stats.in_flight == 0 and proxy.drain_waiters:
                proxy.notify_drained(stats.colour)

    # ------------------------------------------------------------ failures and the end

    def fail(self, status: int, detail: str, *, error: str | None = None) -> None:
        """Answer with the proxy's own error response (or cut if one has started)."""
        if self.done:
            return
        if self.resp_started:
            self.cut(error or detail)
            return
        client = self.client
        self.error = error or detail
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.abort()
        if self.waiting and self.server is not None:
            self.waiting = False
            self.server.cancel(self)
        self.status = status
        self.resp_started = True
        # A bodyless request may be refused from inside its own head callback,
        # before the parser reports it complete: it is complete all the same.
        self.closing = (
            (self.has_body and not self.req_done)
            or not self.keep_alive
            or self.upgrade
            or client._closing
            or client.proxy.draining
        )
        client.write(error_response(status, detail, close=self.closing))
        self.finish()
        client.exchange_done(self)

    def body_failed(self, status: int, detail: str) -> None:
        """The request body broke the rules (too large, malformed, stalled)."""
        if self.client._active is not self:
            self.pending_fail = (status, detail)  # answered when its turn comes
            return
        self.fail(status, detail)

    def cut(self, error: str) -> None:
        """Abandon a response that has started: the client must see it incomplete."""
        if self.done:
            return
        self.error = error
        self.flush_response()
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.abort()
        self.finish()
        # With a length or chunks the client can tell the body is short; a
        # close-delimited body would look complete after a FIN, so reset.
        self.client.cut(reset=self.resp_mode == _BODY_PASS and not self.http11)

    def client_lost(self) -> None:
        """The client connection closed."""
        if self.tunnel_open:
            self.end_tunnel()
            return
        if self.done:
            return
        if not self.resp_started:
            self.status = 499
        self.error = self.error or "client closed the connection"
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.abort()
        elif self.waiting and self.server is not None:
            self.waiting = False
            self.server.cancel(self)
        self.finish()

    def finish(self) -> None:
        """Count and log the request (once)."""
        if self.done:
            return
        self.done = True
        client = self.client
        proxy = client.proxy
        now = monotonic()
        duration = now - self.t0
        status = self.status or 499
        stats = self.stats
        if stats is None:
            proxy.metrics.reject(status)
        else:
            if not self.tunnel_open:
                stats.in_flight -= 1
                if stats.in_flight == 0 and proxy.drain_waiters:
                    proxy.notify_drained(stats.colour)
            stats.observe(status, duration)
        access_log = proxy.access_log
        if access_log is not None:
            server = self.server
            access_log.record(
                now,
                self.colour or "-",
                server.name if server is not None else "-",
                self.method,
                self.url,
                status,
                self.sent,
                duration,
                self.reason or "-",
                self.error,
            )


@mypyc_attr(allow_interpreted_subclasses=True)  # see TimedProtocol
class ClientConnection(TimedProtocol):
    """One client TCP connection: parses requests, runs their exchanges in order."""

    __slots__ = (
        "_active",
        "_cl",
        "_closing",
        "_codes",
        "_conn_value",
        "_cookie",
        "_deferred",
        "_expect",
        "_feeding",
        "_fwd",
        "_fwd_a",
        "_fwd_b",
        "_head_bytes",
        "_head_timed",
        "_host",
        "_hosts",
        "_hsize",
        "_in_head",
        "_input_broken",
        "_input_done",
        "_last",
        "_lines",
        "_max_head",
        "_mode",
        "_node",
        "_override",
        "_parser",
        "_parsing",
        "_paused",
        "_peer",
        "_queue",
        "_rare",
        "_reject",
        "_reject_detail",
        "_sticky",
        "_te",
        "_tunnel_conn",
        "_upgrade_value",
        "_url",
        "_write_paused",
        "_xff",
        "proxy",
        "transport",
    )

    def __init__(self, proxy: ProxyServer) -> None:
        super().__init__(proxy.loop)
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self._parser = HttpRequestParser(self)
        self._mode = _HTTP
        self._active: Exchange | None = None  # the exchange being answered
        self._parsing: Exchange | None = None  # the exchange whose body is being read
        self._last: Exchange | None = None  # the most recently parsed exchange
        self._queue: deque[Exchange] = deque()  # pipelined exchanges behind _active
        self._paused = 0
        self._write_paused = False
        self._closing = False  # close after the current response
        self._feeding = False
        self._in_head = False
        self._head_timed = False
        self._head_bytes = 0
        self._input_broken = False  # unparseable input: answer what came before, then close
        self._input_done = False  # the last request asked to close
        self._deferred: bytes | None = None  # error response owed after earlier answers
        self._reject = 0
        self._reject_detail = ""
        self._tunnel_conn: UpstreamConnection | None = None
        self._codes = proxy.header_codes
        self._max_head = proxy.max_header_bytes
        # The client's address as X-Forwarded-For and Forwarded write it, and
        # the forwarding lines of a usual request around its Host value.
        self._peer = b"unknown"
        self._node = b"unknown"
        self._fwd_a = b""
        self._fwd_b = b""
        self._url = b""
        self._lines: list[bytes] = [b""]  # slot 0 becomes the request line
        self._hsize = 0
        self._host: bytes | None = None
        self._hosts = 0
        self._cl: bytes | None = None
        self._conn_value: bytes | None = None
        self._cookie: bytes | None = None
        self._reset_rare()

    def _reset_rare(self) -> None:
        """Forget the headers _rare_header keeps (only ever set when _rare is)."""
        self._rare = False
        self._te: bytes | None = None
        self._upgrade_value: bytes | None = None
        self._xff: bytes | None = None
        self._fwd: bytes | None = None
        self._expect: bytes | None = None
        self._sticky: bytes | None = None
        self._override: bytes | None = None

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else "unknown"
        raw = self._peer = ip.encode("ascii", "replace")
        node = self._node = forwarded_node(ip) if ip != "unknown" else b"unknown"
        self._fwd_a = b"X-Forwarded-For: " + raw + CRLF + _XF_PROTO + b"X-Forwarded-Host: "
        self._fwd_b = CRLF + b"Forwarded: for=" + node + b";proto=http\r\n" + CRLF
        proxy = self.proxy
        proxy.connections.add(self)
        if proxy.draining:
            self.close()
            return
        # The first request must arrive within client_header (nginx does the same).
        self._set_deadline(self._loop.time() + proxy.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._mode != _HTTP:
            self._data_in_other_mode(data)
            return
        if self._input_broken:
            return
        self._feeding = True
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._feeding = False
            self._upgrade_requested(data, exc.args[0])
            return
        except HttpParserError:
            self._feeding = False
            self._parse_failed()
            return
        self._feeding = False
        if self._mode != _HTTP:
            return
        ex = self._active
        if ex is not None and ex.upstream is not None and ex.out:
            ex.flush_request()
        if self._in_head:
            self._head_bytes += len(data)
            proxy = self.proxy
            if self._head_bytes > 2 * self._max_head:
                # One giant header line the parser is still accumulating.
                self._head_refused(431, DETAIL_HEADERS_TOO_LARGE)
            elif not self._head_timed and self._active is None:
                self._head_timed = True
                self._set_deadline(self._loop.time() + proxy.header_timeout)
        elif self._parsing is not None:
            self._set_deadline(self._loop.time() + self.proxy.body_timeout)
        elif not self._write_paused and self._active is not None:
            self._deadline = 0.0  # waiting for the upstream; its timer runs

    def eof_received(self) -> bool | None:
        # Like nginx, a client that closes while its request is in progress is
        # gone (499): the upstream request is abandoned rather than finished
        # for nobody. Idle or lingering connections just close.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._mode = _CLOSED
        self._stop_timer()
        proxy = self.proxy
        proxy.connection_closed(self)
        ex = self._active
        self._active = None
        if ex is not None:
            ex.client_lost()
        while self._queue:
            self._queue.popleft().client_lost()
        parsing = self._parsing
        if parsing is not None and not parsing.done:
            parsing.client_lost()
        self._parsing = None
        self._tunnel_conn = None

    def pause_writing(self) -> None:
        self._write_paused = True
        ex = self._active
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()
        self._set_deadline(self._loop.time() + self.proxy.send_timeout)

    def resume_writing(self) -> None:
        self._write_paused = False
        ex = self._active
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()
        now = self._loop.time()
        if self._mode == _LINGER:
            return
        if self._parsing is not None:
            self._set_deadline(now + self.proxy.body_timeout)
        elif self._active is None:
            self._set_deadline(now + self.proxy.keepalive_timeout)
        else:
            self._deadline = 0.0

    def _deadline_expired(self, now: float) -> None:
        mode = self._mode
        if mode == _LINGER:
            self.close()
            return
        if mode != _HTTP:
            return  # tunnels are timed by their upstream connection
        if self._write_paused:
            self._abandon("client stopped reading (timeouts.client_send)")
            return
        if self._in_head and self._active is None:
            self._head_refused(408, DETAIL_HEADER_TIMEOUT)
            return
        parsing = self._parsing
        if parsing is not None:
            if self._paused:  # we stopped reading, not the client: wait on
                self._set_deadline(now + self.proxy.body_timeout)
                return
            self._parsing = None
            self._input_broken = True
            parsing.body_failed(408, DETAIL_BODY_TIMEOUT)
            return
        if self._active is None:
            self.close()  # idle keep-alive connection: just close, like nginx

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_timed = False
        self._head_bytes = 0
        self._url = b""
        self._lines = [b""]  # slot 0 becomes the request line
        self._hsize = 0
        self._host = None
        self._hosts = 0
        self._cl = None
        self._conn_value = None
        self._cookie = None
        if self._rare:
            self._reset_rare()

    def on_url(self, url: bytes) -> None:
        url = self._url = self._url + url
        size = self._hsize = len(url)  # the target comes before any header
        if size > self._max_head:
            self.refuse(414, DETAIL_URI_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked trailer: dropped
        hsize = self._hsize + len(name) + len(value) + 4
        self._hsize = hsize
        if hsize > self._max_head:
            self.refuse(431, DETAIL_HEADERS_TOO_LARGE)
        code = self._codes.get(name.lower())
        if code is None:
            self._lines += (name, COLON_SP, value, CRLF)
        elif code == REQ_HOST:
            self._hosts += 1
            self._host = value
            self._lines += (name, COLON_SP, value, CRLF)
        elif code == REQ_CONTENT_LENGTH:
            self._cl = value
            self._lines += (name, COLON_SP, value, CRLF)
        elif code == REQ_CONNECTION:
            self._conn_value = join_values(self._conn_value, value)
        elif code == REQ_COOKIE:
            self._cookie = join_values(self._cookie, value, b"; ")
            self._lines += (name, COLON_SP, value, CRLF)
        elif code != REQ_HOP and code != REQ_XF_REPLACED:  # those two are just dropped
            self._rare_header(code, name, value)

    def _rare_header(self, code: int, name: bytes, value: bytes) -> None:
        """A header that changes how the request is forwarded or routed."""
        self._rare = True
        if code == REQ_XFF:
            self._xff = join_values(self._xff, value)
        elif code == REQ_FORWARDED:
            self._fwd = join_values(self._fwd, value)
        elif code == REQ_UPGRADE:
            self._upgrade_value = value
        elif code == REQ_TRANSFER_ENCODING:
            self._te = join_values(self._te, value)
        elif code == REQ_EXPECT:
            self._expect = join_values(self._expect, value)
        elif code == REQ_STICKY:
            self._sticky = value
            self._lines += (name, COLON_SP, value, CRLF)
        elif code == REQ_OVERRIDE:
            self._override = value
            self._lines += (name, COLON_SP, value, CRLF)
        elif code == REQ_STICKY_OVERRIDE:
            self._sticky = self._override = value
            self._lines += (name, COLON_SP, value, CRLF)

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        url = self._url
        # The usual request takes a shortcut through what _head_general does:
        # HTTP/1.1 keep-alive, one Host, an origin-form target, no header
        # _rare_header keeps, no cookie of our own to set.
        if self._rare or self._hosts != 1 or url[:1] != b"/" or self.proxy.own_cookie is not None:
            self._head_general(parser, url)
            return
        conn = self._conn_value
        if conn is None:
            # Keep-alive without a Connection header: only HTTP/1.1 (1.0, 0.9 and
            # 2.0 default to close), so the version need not be asked for.
            if not parser.should_keep_alive():
                self._head_general(parser, url)
                return
        elif conn.lower() != b"keep-alive" or parser.get_http_version() != "1.1":
            self._head_general(parser, url)  # Connection: close, or naming headers, or 1.0
            return
        method = parser.get_method()
        if method == b"CONNECT":
            self._head_general(parser, url)  # refused there
            return
        proxy = self.proxy
        has_body = False
        cl = self._cl
        if cl is not None:
            length = int(cl)  # llhttp validated the digits
            if length > proxy.max_body_bytes:
                self.refuse(413, DETAIL_BODY_TOO_LARGE)
            has_body = length > 0
        # Routing inputs from cookies (the configured override and sticky cookies).
        override = sticky = None
        cookie = self._cookie
        if cookie is not None:
            if proxy.override_cookie is not None:
                override = parse_colour(cookie_value(cookie, proxy.override_cookie))
            if proxy.sticky_cookie is not None:
                sticky = cookie_value(cookie, proxy.sticky_cookie)
        lines = self._lines
        # X-Forwarded-*, Forwarded and the blank line around the one Host value.
        lines += (self._fwd_a, self._host, self._fwd_b)  # type: ignore[arg-type]  # _hosts == 1
        lines[0] = method + b" " + url + HTTP11
        self._begin(
            Exchange(
                self,
                method,
                url,
                b"".join(lines),
                True,  # http11
                True,  # keep_alive
                False,  # upgrade
                False,  # chunked
                has_body,
                False,  # expect_continue
                sticky,
                override,
                None,  # set_cookie
                monotonic(),  # t0: durations need more than uvloop's millisecond loop clock
            )
        )

    def _head_general(self, parser: HttpRequestParser, url: bytes) -> None:
        """on_headers_complete for any request (the usual one has a shortcut)."""
        proxy = self.proxy
        version = parser.get_http_version()
        if version == "1.1":
            http11 = True
        elif version == "1.0":
            http11 = False
        else:
            self.refuse(505, DETAIL_VERSION)
        method = parser.get_method()
        if method == b"CONNECT":
            self.refuse(405, DETAIL_METHOD)
        keep_alive = parser.should_keep_alive()
        upgrade = http11 and parser.should_upgrade() and self._upgrade_value is not None
        lines = self._lines
        host = self._host
        absolute = False
        if url[:1] != b"/":
            split = split_absolute_target(url)
            if split is not None:
                # RFC 9112 section 3.2.2: the target's authority replaces Host.
                absolute = True
                host, url = split
                lines = remove_headers(lines, (b"host",), start=1)
                lines += (b"Host", COLON_SP, host, CRLF)
        if self._hosts > 1 or (http11 and self._hosts == 0 and not absolute):
            self.refuse(400, DETAIL_NO_HOST)
        if self._conn_value is not None:
            named = named_by_connection(self._conn_value)
            if named:
                lines = remove_headers(lines, named, start=1)
        expect_continue = False
        if self._expect is not None:
            if self._expect.strip().lower() != b"100-continue":
                self.refuse(417, DETAIL_EXPECT)
            expect_continue = http11
        chunked = self._te is not None  # llhttp guarantees chunked is the final coding
        has_body = chunked
        if self._cl is not None:
            length = int(self._cl)  # llhttp validated the digits
            if length > proxy.max_body_bytes:
                self.refuse(413, DETAIL_BODY_TOO_LARGE)
            has_body = has_body or length > 0
        # Routing inputs: override pins a colour; a sticky key keeps a client's colour.
        override = None
        if self._override is not None:
            override = parse_colour(self._override)
        cookie = self._cookie
        if override is None and cookie is not None and proxy.override_cookie is not None:
            override = parse_colour(cookie_value(cookie, proxy.override_cookie))
        sticky = self._sticky
        set_cookie = None
        if sticky is None and cookie is not None:
            if proxy.sticky_cookie is not None:
                sticky = cookie_value(cookie, proxy.sticky_cookie)
            if sticky is None and proxy.own_cookie is not None:
                sticky = cookie_value(cookie, proxy.own_cookie)
        if sticky is None and proxy.own_cookie is not None:
            sticky = secrets.token_urlsafe(16).encode("ascii")
            set_cookie = set_cookie_line(proxy.own_cookie_name, sticky, proxy.own_cookie_max_age)
        # Forwarding headers.
        xff = self._xff
        if xff is None:
            lines += (b"X-Forwarded-For: ", self._peer, CRLF)
        else:
            lines += (b"X-Forwarded-For: ", xff, b", ", self._peer, CRLF)
        lines.append(_XF_PROTO)
        if host is not None:
            lines += (b"X-Forwarded-Host: ", host, CRLF)
        else:  # HTTP/1.0 without Host: name the address the client connected to
            lines.append(b"Host: " + self._local_authority() + CRLF)
        fwd = self._fwd
        node = self._node
        if fwd is None:
            lines += (b"Forwarded: for=", node, b";proto=http\r\n")
        else:
            lines += (b"Forwarded: ", fwd, b", for=", node, b";proto=http\r\n")
        if self._te is not None:
            lines += (b"Transfer-Encoding: ", self._te, CRLF)
        if upgrade and self._upgrade_value is not None:
            lines += (b"Connection: upgrade\r\nUpgrade: ", self._upgrade_value, CRLF)
        lines.append(CRLF)
        lines[0] = method + b" " + url + HTTP11
        self._begin(
            Exchange(
                self,
                method,
                url,
                b"".join(lines),
                http11,
                keep_alive,
                upgrade,
                chunked,
                has_body,
                expect_continue and has_body,  # expect_continue
                sticky,
                override,
                set_cookie,
                monotonic(),  # t0: durations need more than uvloop's millisecond loop clock
            )
        )

    def _begin(self, ex: Exchange) -> None:
        """A request head is complete: answer it now, or after the ones before it."""
        self._last = ex
        self._parsing = ex
        if self._active is None:
            self._active = ex
            ex.start(self._loop.time())
        else:
            self._queue.append(ex)
            self.pause(_PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is not None:
            ex.request_body(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        self._parsing = None
        if ex is not None:
            ex.request_complete()
            if not ex.keep_alive:
                self._input_done = True

    # ------------------------------------------------------------ refusals

    def refuse(self, status: int, detail: str) -> NoReturn:
        """Stop parsing: the request being read gets ``status`` (raised from callbacks)."""
        self._reject = status
        self._reject_detail = detail
        raise _Refused(detail)

    def _parse_failed(self) -> None:
        status = self._reject or 400
        detail = self._reject_detail or DETAIL_BAD_REQUEST
        self._reject = 0
        if self._input_done and not self._in_head and self._parsing is None:
            # Bytes after a request that asked to close: ignored, like nginx.
            self._input_broken = True
            return
        ex = self._parsing
        if ex is not None:  # the body of a routed request broke the rules
            self._parsing = None
            self._input_broken = True
            ex.body_failed(status, detail)
            return
        self._head_refused(status, detail)

    def _head_refused(self, status: int, detail: str) -> None:
        """A request is refused before it became an exchange."""
        self._input_broken = True
        self._in_head = False
        self.proxy.metrics.reject(status)
        access_log = self.proxy.access_log
        if access_log is not None:
            access_log.record(
                monotonic(), "-", "-", b"-", self._url or b"-", status, 0, 0.0, "-", detail
            )
        response = error_response(status, detail, close=True)
        if self._active is None:
            self.write(response)
            self._linger()
        else:
            self._deferred = response  # after the answers already owed

    # ------------------------------------------------------------ upgrades and tunnels

    def _upgrade_requested(self, data: bytes, offset: int) -> None:
        ex = self._last
        if ex is not None and ex.req_done and not ex.upgrade:
            # An upgrade llhttp accepted but the proxy does not pass on (HTTP/1.0):
            # answer the request normally, then close; what follows is not HTTP.
            self._input_broken = True
            self._closing = True
            return
        if ex is None or not ex.req_done:
            self._parse_failed()
            return
        self._mode = _UPGRADING
        if offset < len(data):
            ex.tunnel_out(data[offset:])
        active = self._active
        if active is not None and active.upstream is not None and active.out:
            active.flush_request()

    def _data_in_other_mode(self, data: bytes) -> None:
        mode = self._mode
        if mode == _TUNNEL:
            conn = self._tunnel_conn
            if conn is not None:
                conn.write(data)
                conn.touch(self._loop.time())
        elif mode == _UPGRADING:
            ex = self._last
            if ex is not None and not ex.done:
                ex.tunnel_out(data)
                if ex.upstream is not None and self._active is ex:
                    ex.flush_request()
        # _LINGER / _CLOSED: dropped

    def enter_tunnel(self, conn: UpstreamConnection) -> None:
        """Switch to raw byte passing with ``conn`` (after a 101)."""
        self._mode = _TUNNEL
        self._tunnel_conn = conn
        self._deadline = 0.0
        if self._paused & ~_PAUSE_UPSTREAM:
            self._paused &= _PAUSE_UPSTREAM
            if not self._paused and self.transport is not None:
                self.transport.resume_reading()

    # ------------------------------------------------------------ used by exchanges

    def write(self, data: bytes) -> None:
        """Write to the client (dropped once the connection is closed)."""
        transport = self.transport
        if transport is not None and self._mode != _CLOSED:
            transport.write(data)

    def pause(self, reason: int) -> None:
        """Stop reading from the client for ``reason``."""
        if not self._paused and self.transport is not None and self._mode <= _TUNNEL:
            self.transport.pause_reading()
        self._paused |= reason

    def resume(self, reason: int) -> None:
        """Resume reading once no reason to pause is left."""
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and self._mode <= _TUNNEL:
                self.transport.resume_reading()

    def exchange_done(self, ex: Exchange, now: float | None = None) -> None:
        """The active exchange finished: start the next one, or idle, or close."""
        if self._active is not ex:
            return
        self._active = None
        if self._mode >= _LINGER:  # lingering or closed
            return
        if ex.closing or self._closing:
            self._linger()
            return
        if now is None:
            now = self._loop.time()
        queue = self._queue
        if queue:
            nxt = queue.popleft()
            self._active = nxt
            if not queue:
                self.resume(_PAUSE_PIPELINE)
            nxt.start(now)
            return
        if self._paused:
            self.resume(_PAUSE_PIPELINE)
        if self._deferred is not None:
            self.write(self._deferred)
            self._deferred = None
            self._linger()
            return
        if self._in_head:
            if not self._head_timed:
                self._head_timed = True
                self._set_deadline(now + self.proxy.header_timeout)
        elif not self._write_paused:
            deadline = self._deadline = now + self.proxy.keepalive_timeout  # _set_deadline
            if deadline < self._timer_at:
                self._arm(deadline)

    def cut(self, *, reset: bool) -> None:
        """End the connection mid-response so the client sees it incomplete."""
        self._active = None
        transport = self.transport
        if transport is None or self._mode == _CLOSED:
            return
        self._mode = _CLOSED
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # abort() alone sends a FIN when nothing is unread; force an RST.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()

    def close(self) -> None:
        """Close after writing what is buffered."""
        transport = self.transport
        if transport is not None and self._mode != _CLOSED:
            self._mode = _CLOSED
            transport.close()

    def drain(self) -> None:
        """Shutdown: close if idle, else close after the current response."""
        if self._mode == _CLOSED or self._mode == _LINGER:
            return
        self._closing = True
        if self._mode == _HTTP and self._active is None and not self._in_head:
            self.close()

    @property
    def idle(self) -> bool:
        """No request in progress (between keep-alive requests)."""
        return self._mode == _HTTP and self._active is None and not self._in_head

    def _abandon(self, error: str) -> None:
        ex = self._active
        if ex is not None:
            ex.error = error
        transport = self.transport
        if transport is not None and self._mode != _CLOSED:
            self._mode = _CLOSED
            transport.abort()

    def _linger(self) -> None:
        """Close our side after the response, reading and dropping what the client still sends.

        Closing outright with unread bytes in the socket makes the kernel send
        a reset, which can destroy the response before the client read it.
        """
        transport = self.transport
        if transport is None or self._mode == _CLOSED:
            return
        self._mode = _LINGER
        self.proxy.connection_closed(self)
        if not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self._paused = 0
        transport.resume_reading()
        self._set_deadline(self._loop.time() + _LINGER_TIMEOUT)

    def _local_authority(self) -> bytes:
        sockname = self.transport.get_extra_info("sockname") if self.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            host, port = str(sockname[0]), int(sockname[1])
            return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode("ascii")
        return b"localhost"


class _Mirror:
    """A copy of a safe request sent to green; its answer is read and discarded."""

    __slots__ = ("_finished", "head", "is_head", "proxy", "server")

    upgrade = False
    req_done = True

    def __init__(self, proxy: ProxyServer, server: UpstreamServer, head: bytes, is_head: bool):
        self.proxy = proxy
        self.server = server
        self.head = head
        self.is_head = is_head
        self._finished = False

    def upstream_ready(self, conn: UpstreamConnection) -> bool:
        if self._finished:
            return False
        conn.begin(self, self.proxy.loop.time())
        conn.write(self.head)
        return True

    def upstream_failed(self, error: UpstreamError) -> None:
        self._end(failed=True)

    def on_response_head(
        self,
        status: int,
        head: bytes,
        framing: int,
        upgrade: bytes | None,
        transfer_encoding: bytes | None,
    ) -> None:
        return

    def on_response_body(self, chunk: bytes) -> None:
        return

    def on_response_complete(self) -> None:
        return

    def flush_response(self) -> None:
        return

    def response_done(self, now: float) -> None:
        self._end(failed=False)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        self._end(failed=True)

    def upstream_timeout(self, conn: UpstreamConnection) -> None:
        self._end(failed=True)

    def start_tunnel(self, conn: UpstreamConnection, rest: bytes) -> None:
        conn.close()
        self._end(failed=True)

    def tunnel_data(self, data: bytes) -> None:
        return

    def tunnel_closed(self) -> None:
        return

    def upstream_write_paused(self) -> None:
        return

    def upstream_write_resumed(self) -> None:
        return

    def _end(self, *, failed: bool) -> None:
        if self._finished:
            return
        self._finished = True
        self.proxy.mirrors_in_flight -= 1
        if failed:
            self.proxy.metrics.mirrors_failed += 1


_M_TRIM_THRESHOLD: Final = -1  # glibc's mallopt() parameters
_M_MMAP_THRESHOLD: Final = -3
_malloc_tuned = False


def keep_freed_buffers() -> None:
    """Make glibc's malloc reuse freed read buffers instead of trimming and regrowing the heap.

    Every socket read brings a new bytes object of up to 256 KiB (and llhttp
    slices a body piece of it). Left to glibc's dynamic thresholds, a freed
    block at the top of the heap can be handed back to the kernel and taken
    again on the next read: a ``brk`` each way and up to 64 page faults,
    measured at +45 % CPU per 1 MiB response. Fixed thresholds keep up to
    4 MiB of freed heap for reuse. Once per process; nothing on other libcs.
    """
    global _malloc_tuned  # once per process
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc (musl, macOS): their allocators need no help here
    mallopt(_M_MMAP_THRESHOLD, 1024 * 1024)
    mallopt(_M_TRIM_THRESHOLD, 4 * 1024 * 1024)


class ProxyServer:
    """The blue/green reverse proxy: listener, connections, pools, routing and counters.

    Construct inside a running event loop, then ``await start()``. Later
    features push decisions in (:meth:`set_routing`) and read numbers out
    (:meth:`in_flight`, :meth:`stats_snapshot`, :attr:`registry`); the hot
    path never awaits them.
    """

    def __init__(
        self,
        config: Config,
        *,
        listen: Address | None = None,
        access_log: AccessLog | None = None,
        request_header_hook: RequestHeaderHook | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        require_upstreams(config)
        keep_freed_buffers()
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.listen_address = listen if listen is not None else config.listeners.proxy
        routing = config.routing
        timeouts = config.timeouts
        limits = config.limits
        self.router = Router(
            routing.green_weight_bp, salt=routing.salt.encode("utf-8"), mirror_bp=routing.mirror_bp
        )
        self.metrics = ProxyMetrics(registry, pools=self._pool_gauges)
        self.access_log = access_log
        self.request_header_hook = request_header_hook
        # Hot-path settings as plain attributes.
        self.max_header_bytes = limits.max_header_bytes
        self.max_body_bytes = limits.max_body_bytes
        self.retry_statuses = frozenset(config.retries.statuses)
        self.header_timeout = timeouts.client_header
        self.body_timeout = timeouts.client_body
        self.keepalive_timeout = timeouts.client_keepalive
        self.send_timeout = timeouts.client_send
        sticky = routing.sticky
        override = routing.override
        self.sticky_cookie = sticky.cookie.encode("latin-1") if sticky.cookie else None
        self.own_cookie = sticky.own_cookie.encode("latin-1") if sticky.own_cookie else None
        self.own_cookie_name = sticky.own_cookie or ""
        self.own_cookie_max_age = sticky.own_cookie_max_age
        self.override_cookie = override.cookie.encode("latin-1") if override.cookie else None
        try:
            self.header_codes = request_header_codes(
                sticky_header=sticky.header,
                override_header=override.header,
                cookies=bool(sticky.cookie or sticky.own_cookie or override.cookie),
            )
        except ValueError as exc:
            raise ConfigError("routing", str(exc), source=config.source) from None
        settings = PoolSettings(
            max_connections=limits.upstream_connections_per_server,
            max_waiting=limits.upstream_queue_per_server,
            connect_timeout=timeouts.connect,
            read_timeout=timeouts.upstream_read,
            idle_timeout=timeouts.upstream_idle,
        )
        self.sets: dict[Colour, ServerSet] = {}
        for colour in (Colour.BLUE, Colour.GREEN):
            servers = [
                UpstreamServer(address, colour, settings, self.metrics.colours[colour], self.loop)
                for address in config.upstreams[colour.value].servers
            ]
            self.sets[colour] = ServerSet(colour, servers)
        # Per colour, what a request needs once its colour is chosen (one lookup).
        self.lanes: dict[Colour, tuple[ServerSet, ColourStats]] = {
            colour: (self.sets[colour], self.metrics.colours[colour]) for colour in self.sets
        }
        self.mirror_limit = max(1, limits.upstream_connections_per_server // 4) * len(
            self.sets[Colour.GREEN].servers
        )
        self.mirrors_in_flight = 0
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self.drain_waiters: dict[Colour, list[asyncio.Future[None]]] = {}
        self._all_closed: asyncio.Event | None = None
        self._server: asyncio.Server | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self, sock: socket.socket | None = None) -> None:
        """Start accepting connections (on ``sock`` if given, else the configured address)."""
        if sock is None:
            try:
                sock = create_listener(self.listen_address)
            except OSError as exc:
                raise ConfigError(
                    "listeners.proxy",
                    f"cannot listen on {self.listen_address}: {exc.strerror or exc}; "
                    "pick a free address or stop what is using it",
                    source=self.config.source,
                ) from None
        self._server = await self.loop.create_server(lambda: ClientConnection(self), sock=sock)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually listened on (useful with port 0)."""
        assert self._server is not None  # noqa: S101  # after start()
        # uvloop's Server.sockets is a list where typeshed says tuple; compiled
        # (mypyc) code checks declared types, so read it untyped.
        sockets: list[socket.socket] = list(getattr(self._server, "sockets"))  # noqa: B009
        name = sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry holding this proxy's metrics."""
        return self.metrics.registry

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109  # a deadline, not a cancel scope
        """Stop accepting, close idle connections, let in-flight requests finish.

        Responses not started yet carry ``Connection: close``. After
        ``timeout`` seconds the remaining connections are cut. Returns True
        when everything finished in time.
        """
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.drain()
        finished = True
        if self.connections:
            self._all_closed = asyncio.Event()
            try:
                async with asyncio.timeout(timeout):
                    await self._all_closed.wait()
            except TimeoutError:
                finished = False
            for conn in list(self.connections):
                conn._abandon(DETAIL_SHUTTING_DOWN)
        for server_set in self.sets.values():
            for server in server_set.servers:
                server.close()
        if self.access_log is not None:
            self.access_log.close()
        return finished

    async def stop(self) -> None:
        """Stop at once: cut every connection."""
        await self.drain(0)

    def connection_closed(self, conn: ClientConnection) -> None:
        """A client connection closed (or started lingering)."""
        self.connections.discard(conn)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    # ------------------------------------------------------------ push API for the control plane

    def set_routing(
        self, green_bp: int, salt: bytes | None = None, mirror_bp: int | None = None
    ) -> None:
        """Apply new weights now (basis points, 0..10000); ``None`` keeps a value.

        Takes effect for the next request on every connection; nothing is
        dropped. Raises ``ValueError`` for values out of range.
        """
        if not 0 <= green_bp <= BASIS_POINTS:
            raise ValueError(f"green weight {green_bp} bp out of range 0..{BASIS_POINTS}")
        self.router.set_weights(green_bp, salt=salt, mirror_bp=mirror_bp)

    def in_flight(self, colour: Colour) -> int:
        """Requests of ``colour`` not finished yet (open tunnels included)."""
        return self.metrics.colours[colour].in_flight

    async def wait_drained(self, colour: Colour, timeout: float) -> bool:  # noqa: ASYNC109  # part of the push API
        """Wait until ``colour`` has no request in flight; False on timeout."""
        if self.metrics.colours[colour].in_flight == 0:
            return True
        future: asyncio.Future[None] = self.loop.create_future()
        waiters = self.drain_waiters.setdefault(colour, [])
        waiters.append(future)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        finally:
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self.drain_waiters.pop(colour, None)
        return True

    def notify_drained(self, colour: Colour) -> None:
        """Wake :meth:`wait_drained` callers of ``colour``."""
        for future in self.drain_waiters.pop(colour, []):
            if not future.done():
                future.set_result(None)

    def stats_snapshot(self) -> StatsSnapshot:
        """Cumulative per-colour numbers now (cheap; diff two with ``since``)."""
        m = self.metrics
        return StatsSnapshot(at=monotonic(), blue=m.blue.snapshot(), green=m.green.snapshot())

    # ------------------------------------------------------------ internals

    def mirror(self, head: bytes, *, is_head: bool) -> None:
        """Send a copy of a safe request to green, unless green is busy."""
        metrics = self.metrics
        if self.mirrors_in_flight >= self.mirror_limit or self.draining:
            metrics.mirrors_dropped += 1
            return
        server = self.sets[Colour.GREEN].pick()
        mirror = _Mirror(self, server, head[:-2] + _MIRROR_MARK, is_head)
        try:
            conn = server.acquire(mirror, wait=False)
        except UpstreamBusyError:
            metrics.mirrors_dropped += 1
            return
        self.mirrors_in_flight += 1
        metrics.mirrors_sent += 1
        if conn is not None:
            mirror.upstream_ready(conn)

    def _pool_gauges(self) -> list[PoolGauge]:
        return [server.gauge() for s in self.sets.values() for server in s.servers]
