"""Logging: structlog as JSON lines, and the proxy's buffered access log.

Application events go through structlog: one JSON object per line with an
event name (``proxy_listening``, ``upstream_connect_failed``), ``level`` and
``timestamp``. The data plane logs only failures.

The access log writes one JSON line per request but keeps its cost off the
request path: :meth:`AccessLog.record` appends one tuple to a list; lines are
formatted in batches on a short timer (or when the batch is full) and handed
to a writer. :class:`ThreadedWriter` writes them from a background thread
with a bounded queue, so a slow log destination (a pipe nobody reads) drops
lines (counted) instead of stalling the proxy. A disabled access log is
``None``: the proxy then builds no record at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Final, TextIO

import structlog

# Fields of one access record, in the order record() takes them.
ACCESS_FIELDS: Final = (
    "colour", "server", "method", "path", "status", "bytes", "duration_s", "reason", "error",
)  # fmt: skip


def configure_logging(*, level: str = "info", stream: TextIO | None = None) -> None:
    """Send structlog events to ``stream`` (stderr) as JSON, one per line."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


class ThreadedWriter:
    """Writes batches of bytes to a binary stream from a daemon thread.

    :meth:`write` never blocks: when ``max_batches`` are already waiting, the
    batch is dropped and its line count added to :attr:`dropped`.

    ``shared``: other processes write to the same stream (serve's workers).
    Batches then go out in writes of whole lines of at most ``PIPE_BUF``
    bytes, which a pipe never interleaves with another writer's; a longer
    batch in one write could be split around another worker's lines.
    """

    def __init__(self, stream: IO[bytes], *, max_batches: int = 64, shared: bool = False) -> None:
        self._stream = stream
        self._chunk = select.PIPE_BUF if shared else 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max_batches)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="bluegreen-access-log", daemon=True)
        self._thread.start()

    def write(self, batch: bytes) -> None:
        """Queue one batch of complete lines."""
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.dropped += batch.count(b"\n")

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, then stop the thread (waits at most ``timeout``)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                for piece in line_chunks(batch, self._chunk) if self._chunk else (batch,):
                    self._stream.write(piece)
                    self._stream.flush()
            except (OSError, ValueError):
                self.dropped += batch.count(b"\n")


def line_chunks(batch: bytes, limit: int) -> list[bytes]:
    """``batch`` cut at line ends into pieces of at most ``limit`` bytes (a longer line alone)."""
    pieces = []
    start = 0
    end = len(batch)
    while start < end:
        stop = start + limit
        if stop >= end:
            pieces.append(batch[start:])
            break
        cut = batch.rfind(b"\n", start, stop)
        if cut < 0:  # one line longer than the limit: it goes whole
            cut = batch.find(b"\n", stop)
            if cut < 0:
                pieces.append(batch[start:])
                break
        pieces.append(batch[start : cut + 1])
        start = cut + 1
    return pieces


class _Clock:
    """Turns ``time.monotonic()`` stamps into ISO-8601 UTC, caching the per-second prefix."""

    __slots__ = ("_offset", "_prefix", "_second")

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()
        self._second = -1
        self._prefix = ""

    def iso(self, monotonic_time: float) -> str:
        wall = monotonic_time + self._offset
        second = int(wall)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((wall - second) * 1000):03d}Z"


_UNSAFE_JSON = bytes(range(0x20)) + b'"\\\x7f'


def _json_text(raw: bytes) -> str:
    """A JSON string literal for request bytes (fast path for plain printable ASCII)."""
    if raw.isascii() and len(raw.translate(None, _UNSAFE_JSON)) == len(raw):
        return '"' + raw.decode("ascii") + '"'
    return json.dumps(raw.decode("latin-1"))


class AccessLog:
    """Buffers access records and writes them as JSON lines in batches."""

    __slots__ = ("_buffer", "_clock", "_flush_handle", "_interval", "_loop", "_max", "_write")

    # _flush_handle is a TimerHandle or, once the buffer is full, a Handle.

    def __init__(
        self,
        write: Callable[[bytes], None],
        *,
        loop: asyncio.AbstractEventLoop,
        interval: float = 0.1,
        max_records: int = 256,
    ) -> None:
        self._write = write
        self._loop = loop
        self._interval = interval
        self._max = max_records
        self._buffer: list[tuple[Any, ...]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._clock = _Clock()

    def record(
        self,
        at: float,
        colour: str,
        server: str,
        method: bytes,
        path: bytes,
        status: int,
        sent: int,
        duration: float,
        reason: str,
        error: str | None,
    ) -> None:
        """Remember one finished request (``at``: ``time.monotonic()``); format later.

        ``colour`` and ``reason`` may be StrEnum members: they are only
        turned into text when the batch is formatted.
        """
        buffer = self._buffer
        buffer.append((at, colour, server, method, path, status, sent, duration, reason, error))
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_later(self._interval, self.flush)
        elif len(buffer) == self._max:
            # Full: format soon, but not inside this request's callback.
            self._flush_handle.cancel()
            self._flush_handle = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Format and hand over everything buffered."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        buffer = self._buffer
        if not buffer:
            return
        self._buffer = []
        iso = self._clock.iso
        # Few distinct values repeat on every line: format each once per batch.
        words: dict[object, str] = {}
        texts: dict[bytes, str] = {}
        stamps: dict[int, str] = {}
        lines = []
        for at, colour, server, method, path, status, sent, duration, reason, error in buffer:
            milli = int(at * 1000)
            stamp = stamps.get(milli)
            if stamp is None:
                stamp = stamps[milli] = iso(at)
            c = words.get(colour)
            if c is None:
                c = words[colour] = _json_text(str(colour).encode())
            r = words.get(reason)
            if r is None:
                r = words[reason] = _json_text(str(reason).encode())
            m = texts.get(method)
            if m is None:
                m = texts[method] = _json_text(method)
            err = "null" if error is None else json.dumps(error)
            lines.append(
                f'{{"timestamp":"{stamp}","event":"access","colour":{c},"server":"{server}",'
                f'"method":{m},"path":{_json_text(path)},"status":{status},"bytes":{sent},'
                f'"duration_s":{duration:.6f},"reason":{r},"error":{err}}}\n'
            )
        self._write("".join(lines).encode("utf-8"))

    def close(self) -> None:
        """Flush what is buffered."""
        self.flush()
