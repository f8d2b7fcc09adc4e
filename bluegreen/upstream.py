"""Upstream side of the data plane: response parsing, keep-alive pools, server sets.

Layers, one per class (like httpcore's pool -> connection -> http11):

* :class:`ServerSet` — one colour's servers, picked round-robin.
* :class:`UpstreamServer` — one server's keep-alive pool: at most
  ``max_connections`` open (or opening) connections, idle ones kept LIFO and
  expired after ``idle_timeout``, and a bounded FIFO of requests waiting for
  one (each wait is counted; beyond ``max_waiting`` -> :class:`UpstreamBusyError`,
  and a request waits at most ``connect_timeout``).
* :class:`UpstreamConnection` — an ``asyncio.Protocol`` parsing responses with
  httptools (llhttp) and handing them to its current :class:`UpstreamUser`
  (the proxy's exchange, or a mirror that discards the answer).

Library errors become :mod:`bluegreen.errors` classes here, at the boundary:
``OSError`` from connect -> :class:`UpstreamConnectError`, a connect that
takes too long -> :class:`UpstreamTimeoutError`.

The connection does the byte-level response work that does not depend on the
client: hop-by-hop headers are dropped, interim 1xx responses other than 101
are swallowed (the proxy answers ``100 Continue`` itself), the framing of the
body is worked out (length, chunked, until close, none), and a response to
HEAD — which llhttp cannot be told about — is treated as complete at its
head, with a fresh parser for the next response.

Response heads are validated by llhttp without per-header callbacks (each
one costs a Python call): once llhttp reports the head complete, its raw
bytes are filtered with bytes operations (:func:`~bluegreen.http_head.response_head`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, cast

import structlog
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from mypy_extensions import mypyc_attr

from bluegreen.errors import (
    UpstreamBusyError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeoutError,
)
from bluegreen.http_head import (
    DETAIL_BUSY,
    DETAIL_QUEUE_TIMEOUT,
    is_chunked,
    response_head,
)
from bluegreen.metrics import PoolGauge

if TYPE_CHECKING:
    from bluegreen.config import Address
    from bluegreen.metrics import ColourStats
    from bluegreen.routing import Colour

log = structlog.get_logger("bluegreen.upstream")

# How the body of a response is delimited on the upstream connection.
FRAMING_NONE: Final = 0  # no body: HEAD, 1xx, 204, 304
FRAMING_LENGTH: Final = 1  # Content-Length
FRAMING_CHUNKED: Final = 2  # Transfer-Encoding ending in chunked
FRAMING_UNTIL_CLOSE: Final = 3  # neither: the body ends when the upstream closes

# Response parsing states of a connection.
_IDLE: Final = 0  # no response expected
_HEAD: Final = 1  # reading a status line and headers
_INTERIM: Final = 2  # inside a swallowed 1xx
_BODY: Final = 3  # reading a body
_DONE: Final = 4  # the response is complete
_UPGRADED: Final = 5  # a 101 was read; the connection becomes a tunnel

_CR_LF: Final = b"\r\n"
_NEVER: Final = float("inf")
# A deadline may fire this much early (asyncio runs timers within its clock resolution).
_TIMER_SLACK: Final = 0.001
# Log at most one connect failure per server per this many seconds.
_CONNECT_LOG_INTERVAL: Final = 1.0


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle on a TCP transport.

    asyncio only does this for sockets it created with ``IPPROTO_TCP``;
    without it a small response waits for a delayed ACK (~40 ms).
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Not TCP (a Unix socket): nothing to tune.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# Compiled (BLUEGREEN_COMPILE=1), a class only Python code may subclass if it says so;
# the tests subclass the protocols to observe them (no measurable cost).
@mypyc_attr(allow_interpreted_subclasses=True)
class TimedProtocol(asyncio.Protocol):
    """An ``asyncio.Protocol`` with one reusable timer for its current deadline.

    Moving the deadline later only stores a float; the timer notices when it
    fires and sleeps again. Only an earlier deadline reschedules the handle.
    Hot paths inline :meth:`_set_deadline` as ``self._deadline = d`` plus
    ``if d < self._timer_at: self._arm(d)``.
    Subclasses implement :meth:`_deadline_expired`.
    """

    __slots__ = ("_deadline", "_loop", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _NEVER  # when _timer fires (a float compare beats timer.when())

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        """(Re)schedule the timer for ``deadline``, earlier than it fires now."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
        self._timer = self._loop.call_at(deadline, self._timer_fired)
        self._timer_at = deadline

    def _stop_timer(self) -> None:
        self._deadline = 0.0
        self._timer_at = _NEVER
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timer_fired(self) -> None:
        self._timer = None
        self._timer_at = _NEVER
        deadline = self._deadline
        if deadline == 0.0:
            return
        now = self._loop.time()
        if now + _TIMER_SLACK < deadline:
            self._arm(deadline)
            return
        self._deadline = 0.0
        self._deadline_expired(now)

    def _deadline_expired(self, now: float) -> None:
        raise NotImplementedError


class UpstreamUser(Protocol):
    """What an :class:`UpstreamConnection` reports to (an exchange or a mirror)."""

    @property
    def is_head(self) -> bool:
        """The request was HEAD: the response has no body whatever it says."""

    @property
    def upgrade(self) -> bool:
        """The request asked for a protocol upgrade (a 101 is acceptable)."""

    @property
    def req_done(self) -> bool:
        """The whole request has been written (the connection may be reused)."""

    def upstream_ready(self, conn: UpstreamConnection) -> bool:
        """A connection is ready for this user; False if it no longer wants one."""

    def upstream_failed(self, error: UpstreamError) -> None:
        """No connection could be had (refused, timed out, queue full)."""

    def on_response_head(
        self,
        status: int,
        head: bytes,
        framing: int,
        upgrade: bytes | None,
        transfer_encoding: bytes | None,
    ) -> None:
        """The final status: status line and end-to-end header lines, each ending in CRLF.

        ``head`` has no blank line yet. ``upgrade`` is the Upgrade value of a
        101; ``transfer_encoding`` the upstream's codings of a chunked or
        close-delimited body.
        """

    def on_response_body(self, chunk: bytes) -> None:
        """A piece of the (de-chunked) body."""

    def on_response_complete(self) -> None:
        """A chunked, close-delimited or HEAD response ended (the others need no ending)."""

    def flush_response(self) -> None:
        """End of one upstream read: write what was produced, in one write."""

    def response_done(self, now: float) -> None:
        """The connection is back in the pool or closed; finish the request (``now``: loop time)."""

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The connection closed, reset or sent garbage before the response ended."""

    def upstream_timeout(self, conn: UpstreamConnection) -> None:
        """The upstream was silent for ``read_timeout``; the connection is aborted."""

    def start_tunnel(self, conn: UpstreamConnection, rest: bytes) -> None:
        """A 101 was read; ``rest`` are the first tunnelled bytes."""

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the upstream side of a tunnel."""

    def tunnel_closed(self) -> None:
        """The upstream side of a tunnel closed."""

    def upstream_write_paused(self) -> None:
        """The upstream's socket buffer is full: stop reading the client."""

    def upstream_write_resumed(self) -> None:
        """The upstream's socket buffer drained."""


class _ProtocolViolation(Exception):  # an internal signal; never escapes this module
    """Raised inside a parser callback to abort parsing a broken response."""


class UpstreamConnection(TimedProtocol):
    """One keep-alive TCP connection to an upstream server."""

    __slots__ = (
        "_broken",
        "_buf",
        "_framing",
        "_got_bytes",
        "_hpos",
        "_keep_alive",
        "_pending",
        "_read_timeout",
        "_reading_paused",
        "_state",
        "closed",
        "idle",
        "parser",
        "released",
        "requests",
        "server",
        "transport",
        "tunnel",
        "user",
    )

    def __init__(self, server: UpstreamServer) -> None:
        super().__init__(server.loop)
        self.server = server
        self._read_timeout = server.settings.read_timeout
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.user: UpstreamUser | None = None
        self.requests = 0  # responses completed on this connection
        self.closed = False
        self.idle = False  # parked in the pool
        self.released = False  # no longer counted by the pool
        self.tunnel = False
        self._state = _IDLE
        self._got_bytes = False
        self._broken = False
        self._keep_alive = False
        self._reading_paused = False
        self._framing = FRAMING_NONE
        # The raw bytes of the head being read: the current read (_buf) and
        # where in it the head starts (_hpos); a head split over several reads
        # keeps its earlier pieces in _pending, joined once it is complete.
        self._buf: bytes | None = None
        self._hpos = 0
        self._pending: list[bytes] = []

    # ------------------------------------------------------------ use by the proxy

    @property
    def got_bytes(self) -> bool:
        """Whether any byte of the current response arrived."""
        return self._got_bytes

    def begin(self, user: UpstreamUser, now: float) -> None:
        """Start serving ``user``: the next bytes written are its request."""
        self.user = user
        self.idle = False
        self._state = _HEAD
        self._got_bytes = False
        deadline = self._deadline = now + self._read_timeout  # _set_deadline, inline
        if deadline < self._timer_at:
            self._arm(deadline)

    def park(self, expires: float) -> None:
        """Become idle in the pool until ``expires`` (loop time)."""
        self.idle = True
        self._deadline = expires  # _set_deadline, inline
        if expires < self._timer_at:
            self._arm(expires)

    def touch(self, now: float) -> None:
        """Push the read deadline out after the proxy wrote request bytes."""
        self._deadline = now + self._read_timeout

    def write(self, data: bytes) -> None:
        """Write request bytes."""
        assert self.transport is not None  # noqa: S101  # begin() is only called when connected
        self.transport.write(data)

    def pause_reading(self) -> None:
        """Stop reading responses (the client's socket buffer is full)."""
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Resume reading responses."""
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection now (the request was abandoned mid-way)."""
        self.user = None
        self.server.discard(self)
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        """Close after flushing what was written (used for tunnels)."""
        self.user = None
        self.server.discard(self)
        if self.transport is not None and not self.closed:
            self.transport.close()

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        user = self.user
        if self.tunnel:
            if user is not None:
                self._deadline = self._loop.time() + self._read_timeout
                user.tunnel_data(data)
            return
        state = self._state
        if user is None or state == _DONE:
            # Bytes nobody asked for: the connection is out of sync; never reuse it.
            self._broken = True
            if user is None:
                self.server.discard(self)
                if self.transport is not None:
                    self.transport.abort()
            return
        self._got_bytes = True
        in_head = state < _BODY
        if in_head:
            pending = self._pending
            if pending:
                pending.append(data)
                self._buf = None  # joined in on_headers_complete
            else:
                self._buf = data
            self._hpos = 0
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._buf = None
            if self._state != _UPGRADED:
                self._fail(user)
                return
            self._deadline = self._loop.time() + self._read_timeout
            offset = exc.args[0]
            self.tunnel = True
            user.start_tunnel(self, data[offset:] if offset < len(data) else b"")
            return
        except HttpParserError:
            self._buf = None
            if self._state != _DONE:
                self._fail(user)
                return
            self._broken = True  # bytes after a complete response: finish it, never reuse
        if in_head:
            buf = self._buf
            if buf is not None:
                self._buf = None
                if self._state < _BODY:  # the head goes on in the next read
                    rest = buf[self._hpos :]
                    if rest:
                        self._pending = [rest]
        user.flush_response()
        now = self._loop.time()
        if self._state == _DONE:
            self._message_done(user, now)
        else:
            self._deadline = now + self._read_timeout

    def eof_received(self) -> bool | None:
        if self.user is None:
            # An idle pooled connection the upstream closed: never hand it out again.
            self.closed = True
            self.server.discard(self)
        return None  # close our side too; connection_lost sorts out what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        self.server.discard(self)
        user = self.user
        self.user = None
        if user is None:
            return
        if self.tunnel:
            user.tunnel_closed()
            return
        if self._state == _BODY and self._framing == FRAMING_UNTIL_CLOSE and exc is None:
            # A close-delimited body ends with a clean close; llhttp cannot see EOF itself.
            user.on_response_complete()
            user.flush_response()
            user.response_done(self._loop.time())
            return
        user.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_write_resumed()

    def _deadline_expired(self, now: float) -> None:
        if self.closed:
            return
        user = self.user
        if user is None:
            if self.idle:  # idle too long in the pool
                self.abort()
            return
        if self._reading_paused:  # our client is slow, not the upstream: wait on
            self._set_deadline(now + self._read_timeout)
            return
        if self.tunnel:
            self.close()
            user.tunnel_closed()
            return
        self.server.stats.timeouts += 1
        self.abort()
        user.upstream_timeout(self)

    # ------------------------------------------------------------ parser callbacks

    # No on_header / on_status / on_message_begin: llhttp then makes no Python
    # call per header; the head is read from the raw bytes once complete.
    # Trailers of a chunked body are thereby dropped (hop-by-hop framing detail).

    def on_headers_complete(self) -> None:
        user = self.user
        if user is None or self._state > _INTERIM:
            raise _ProtocolViolation  # a second response to one request
        buf = self._buf
        if buf is None:  # the head came in several reads
            buf = self._buf = b"".join(self._pending)
            self._pending = []
        start = self._hpos
        if buf[start] != 72:  # not the "H" of "HTTP/"
            while buf[start] in _CR_LF:  # llhttp skips empty lines before a status line
                start += 1
        end = buf.find(b"\r\n\r\n", start) + 2  # the first blank line ends a valid head
        parser = self.parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            self._hpos = end + 2  # the next head starts there
            self._state = _INTERIM  # 100 Continue, 103 Early Hints...: swallowed
            return
        self._keep_alive = parser.should_keep_alive()
        head, has_length, te, upgrade = response_head(buf[start:end], status)
        if status == 101:
            if not user.upgrade:
                raise _ProtocolViolation
            framing = FRAMING_NONE
            self._state = _UPGRADED
        else:
            if user.is_head or status == 204 or status == 304:
                framing = FRAMING_NONE
            elif has_length:  # llhttp refuses Content-Length with Transfer-Encoding
                framing = FRAMING_LENGTH
            elif te is not None:
                framing = FRAMING_CHUNKED if is_chunked(te) else FRAMING_UNTIL_CLOSE
            else:
                framing = FRAMING_UNTIL_CLOSE
            self._state = _BODY
        self._framing = framing
        user.on_response_head(status, head, framing, upgrade, te)
        if user.is_head and status != 101:
            # llhttp would wait for the body Content-Length announces; a HEAD
            # response has none. Finish here; _message_done swaps the parser.
            self._state = _DONE
            self._broken = self._broken or not self._keep_alive
            user.on_response_complete()

    def on_body(self, body: bytes) -> None:
        if self._state != _BODY:
            self._broken = True  # body bytes after a HEAD response: out of sync
            return
        user = self.user
        if user is not None:
            user.on_response_body(body)

    def on_message_complete(self) -> None:
        state = self._state
        if state != _BODY:
            if state in (_INTERIM, _UPGRADED, _DONE):
                return
            raise _ProtocolViolation
        self._keep_alive = self._keep_alive and self.parser.should_keep_alive()
        self._state = _DONE
        if self._framing >= FRAMING_CHUNKED:  # a length or no body needs no ending
            user = self.user
            if user is not None:
                user.on_response_complete()

    # ------------------------------------------------------------ internals

    def _message_done(self, user: UpstreamUser, now: float) -> None:
        reusable = (
            self._keep_alive
            and not self._broken
            and user.req_done
            and not self.closed
            and self._framing != FRAMING_UNTIL_CLOSE
        )
        if user.is_head:
            self.parser = HttpResponseParser(self)
        self.user = None
        self._state = _IDLE
        self.requests += 1
        if reusable:
            self.server.release(self, now)
        else:
            self.abort()
        user.response_done(now)

    def _fail(self, user: UpstreamUser) -> None:
        """The upstream broke the protocol: drop the connection, tell the user."""
        self._broken = True
        user.flush_response()
        self.abort()
        user.upstream_lost(self)


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Limits and timeouts of one server's pool (from ``limits`` and ``timeouts``)."""

    max_connections: int = 256
    max_waiting: int = 1024
    connect_timeout: float = 3.0
    read_timeout: float = 60.0
    idle_timeout: float = 30.0


class UpstreamServer:
    """One upstream server and its keep-alive connection pool."""

    __slots__ = (
        "_closed",
        "_last_log",
        "_queue_timer",
        "_tasks",
        "address",
        "colour",
        "connecting",
        "idle",
        "loop",
        "name",
        "open",
        "settings",
        "stats",
        "waiters",
    )

    def __init__(
        self,
        address: Address,
        colour: Colour,
        settings: PoolSettings,
        stats: ColourStats,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.address = address
        self.colour = colour
        self.name = str(address)
        self.settings = settings
        self.stats = stats
        self.loop = loop
        self.idle: list[UpstreamConnection] = []
        self.open = 0  # connections counted against max_connections (incl. connecting)
        self.connecting = 0
        self.waiters: deque[tuple[UpstreamUser, float]] = deque()
        self._queue_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._last_log = -_CONNECT_LOG_INTERVAL

    def __repr__(self) -> str:
        return f"<UpstreamServer {self.colour} {self.name} open={self.open} idle={len(self.idle)}>"

    def acquire(
        self, user: UpstreamUser, *, fresh: bool = False, wait: bool = True
    ) -> UpstreamConnection | None:
        """A connection for ``user`` now, or None when one will be handed over later.

        Later means ``user.upstream_ready(conn)`` or ``user.upstream_failed(err)``.
        ``fresh`` skips idle connections (after one turned out stale); with
        ``wait=False`` a full pool raises instead of queueing.
        Raises :class:`UpstreamBusyError` when the wait queue is full.
        """
        if not fresh:
            idle = self.idle
            while idle:
                conn = idle.pop()
                conn.idle = False
                transport = conn.transport
                if not conn.closed and transport is not None and not transport.is_closing():
                    return conn
                self.discard(conn)
        if self.open < self.settings.max_connections and not self._closed:
            self.open += 1
            self._connect(user)
            return None
        if not wait or len(self.waiters) >= self.settings.max_waiting or self._closed:
            if wait:
                self.stats.pool_rejections += 1
            raise UpstreamBusyError(self.colour.value, self.name, DETAIL_BUSY)
        now = self.loop.time()
        self.waiters.append((user, now))
        self.stats.pool_waits += 1
        if self._queue_timer is None:
            self._queue_timer = self.loop.call_at(
                now + self.settings.connect_timeout, self._expire_waiters
            )
        return None

    def cancel(self, user: UpstreamUser) -> None:
        """Forget a queued user (its client went away)."""
        for i, (waiting, _) in enumerate(self.waiters):
            if waiting is user:
                del self.waiters[i]
                return

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Take back a connection whose response completed and which can be reused."""
        idle_timeout = self.settings.idle_timeout
        if self._closed or conn.closed or idle_timeout <= 0:
            conn.abort()
            return
        waiters = self.waiters
        while waiters:
            user, _ = waiters.popleft()
            if user.upstream_ready(conn):
                return
        conn.park(now + idle_timeout)
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """Stop counting a connection that is closed or about to be."""
        if conn.released:
            return
        conn.released = True
        self.open -= 1
        if conn.idle:
            conn.idle = False
            with contextlib.suppress(ValueError):
                self.idle.remove(conn)
        # A slot is free: a queued request may open a connection.
        if self.waiters and self.open < self.settings.max_connections and not self._closed:
            user, _ = self.waiters.popleft()
            self.open += 1
            self._connect(user)

    def close(self) -> None:
        """Close idle connections, stop connecting, fail queued requests."""
        self._closed = True
        for conn in list(self.idle):
            conn.abort()
        self.idle.clear()
        for task in list(self._tasks):
            task.cancel()
        while self.waiters:
            user, _ = self.waiters.popleft()
            user.upstream_failed(UpstreamBusyError(self.colour.value, self.name, "proxy stopping"))
        if self._queue_timer is not None:
            self._queue_timer.cancel()
            self._queue_timer = None

    def gauge(self) -> PoolGauge:
        """Pool sizes right now."""
        idle = len(self.idle)
        return PoolGauge(
            colour=self.colour,
            server=self.name,
            idle=idle,
            busy=self.open - idle - self.connecting,
            waiting=len(self.waiters),
        )

    # ------------------------------------------------------------ internals

    def _connect(self, user: UpstreamUser) -> None:
        self.connecting += 1
        task = self.loop.create_task(self._open(user))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, user: UpstreamUser) -> None:
        settings = self.settings
        error: UpstreamError
        try:
            async with asyncio.timeout(settings.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.address.host, self.address.port
                )
        except TimeoutError:
            self.stats.timeouts += 1
            error = UpstreamTimeoutError(
                self.colour.value, self.name, f"no connection within {settings.connect_timeout}s"
            )
        except OSError as exc:
            self.stats.connect_errors += 1
            error = UpstreamConnectError(self.colour.value, self.name, exc.strerror or str(exc))
        except asyncio.CancelledError:
            self.connecting -= 1
            self.open -= 1
            raise
        else:
            self.connecting -= 1
            if conn.closed:  # reset between connect and now; connection_lost discarded it
                user.upstream_failed(
                    UpstreamConnectError(self.colour.value, self.name, "closed right after connect")
                )
                return
            if not user.upstream_ready(conn):
                self.release(conn, self.loop.time())
            return
        self.connecting -= 1
        self.open -= 1
        now = self.loop.time()
        if now - self._last_log >= _CONNECT_LOG_INTERVAL:
            self._last_log = now
            log.warning(
                "upstream_connect_failed",
                colour=self.colour.value,
                server=self.name,
                error=str(error),
            )
        user.upstream_failed(error)
        # The slot this attempt held is free again: let a queued request try.
        if self.waiters and self.open < settings.max_connections and not self._closed:
            waiting, _ = self.waiters.popleft()
            self.open += 1
            self._connect(waiting)

    def _expire_waiters(self) -> None:
        self._queue_timer = None
        now = self.loop.time()
        limit = now - self.settings.connect_timeout + _TIMER_SLACK
        waiters = self.waiters
        while waiters and waiters[0][1] <= limit:
            user, _ = waiters.popleft()
            user.upstream_failed(
                UpstreamBusyError(self.colour.value, self.name, DETAIL_QUEUE_TIMEOUT)
            )
        if waiters:
            self._queue_timer = self.loop.call_at(
                waiters[0][1] + self.settings.connect_timeout, self._expire_waiters
            )


class ServerSet:
    """One colour's servers, balanced round-robin."""

    __slots__ = ("_next", "colour", "only", "servers")

    def __init__(self, colour: Colour, servers: list[UpstreamServer]) -> None:
        if not servers:
            raise ValueError(f"no {colour} servers")
        self.colour = colour
        self.servers = tuple(servers)
        self.only = servers[0] if len(servers) == 1 else None  # no turn to take
        self._next = 0

    def pick(self) -> UpstreamServer:
        """The next server in turn."""
        servers = self.servers
        i = self._next
        self._next = i + 1 if i + 1 < len(servers) else 0
        return servers[i]

    def other_than(self, failed: UpstreamServer) -> UpstreamServer | None:
        """Another server of this colour than ``failed`` (round-robin), or None."""
        if len(self.servers) < 2:
            return None
        for _ in range(len(self.servers)):
            server = self.pick()
            if server is not failed:
                return server
        return None
