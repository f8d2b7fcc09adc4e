"""A raw-socket HTTP/1.1 client for tests where the bytes on the wire matter.

It sends exactly the bytes a test gives it and reads responses strictly:
the head is parsed by httptools, the body is framed by hand from the head
(Content-Length, chunked, or until close) so a test can see whether a
response was complete, how it was framed, and what came after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import httptools


@dataclass
class Response:
    """One response as read off the wire."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = True  # False: the connection ended before the framing said it should
    framing: str = "none"  # none | length | chunked | close
    raw_head: bytes = b""
    chunks: list[bytes] = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        """The first value of a header (case-insensitive)."""
        lowered = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def all(self, name: str) -> list[bytes]:
        """Every value of a header, in order."""
        lowered = name.lower().encode()
        return [v for k, v in self.headers if k.lower() == lowered]

    def has(self, name: str) -> bool:
        """Whether the header is present."""
        return self.header(name) is not None


class _Head:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


class RawClient:
    """One TCP connection speaking raw HTTP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        """Open a connection."""
        reader, writer = await asyncio.open_connection(host, port, limit=2**24)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        """Write bytes and wait until they are handed to the kernel."""
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, data: bytes, *, head: bool = False, wait: float = 5) -> Response:
        """Send one request and read its response."""
        await self.send(data)
        return await self.response(head=head, wait=wait)

    async def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = await self.reader.read(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def _until(self, marker: bytes) -> int | None:
        while (at := self.buffer.find(marker)) < 0:
            if not await self._fill():
                return None
        return at

    async def _exactly(self, n: int) -> bool:
        while len(self.buffer) < n:
            if not await self._fill():
                return False
        return True

    async def response(self, *, head: bool = False, wait: float = 5) -> Response:
        """Read the next response (``head``: it answers a HEAD request)."""
        async with asyncio.timeout(wait):
            return await self._response(head)

    async def _response(self, head: bool) -> Response:
        at = await self._until(b"\r\n\r\n")
        if at is None:
            raise ConnectionError(
                f"connection closed before a response head: {bytes(self.buffer)!r}"
            )
        raw_head = bytes(self.buffer[: at + 4])
        del self.buffer[: at + 4]
        collector = _Head()
        parser = httptools.HttpResponseParser(collector)
        parser.feed_data(raw_head)
        status = parser.get_status_code()
        response = Response(status, collector.reason, collector.headers, raw_head=raw_head)
        if 100 <= status < 200 or status in (204, 304) or head:
            return response
        te = response.header("transfer-encoding")
        length = response.header("content-length")
        if te is not None and te.lower().endswith(b"chunked"):
            response.framing = "chunked"
            await self._chunked(response)
        elif length is not None:
            response.framing = "length"
            n = int(length)
            response.complete = await self._exactly(n)
            response.body = bytes(self.buffer[:n])
            del self.buffer[:n]
        else:
            response.framing = "close"
            while await self._fill():
                pass
            response.body = bytes(self.buffer)
            self.buffer.clear()
        return response

    async def _chunked(self, response: Response) -> None:
        body = bytearray()
        while True:
            at = await self._until(b"\r\n")
            if at is None:
                response.complete = False
                break
            size = int(bytes(self.buffer[:at]).split(b";")[0], 16)
            del self.buffer[: at + 2]
            if size == 0:
                while (at := await self._until(b"\r\n")) is not None and at > 0:
                    del self.buffer[: at + 2]  # trailer line
                if at is None:
                    response.complete = False
                else:
                    del self.buffer[:2]
                break
            if not await self._exactly(size + 2):
                response.complete = False
                body += self.buffer
                self.buffer.clear()
                break
            chunk = bytes(self.buffer[:size])
            response.chunks.append(chunk)
            body += chunk
            del self.buffer[: size + 2]
        response.body = bytes(body)

    async def read_some(self, wait: float = 5) -> bytes:
        """Whatever arrives next (b"" at EOF)."""
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            return data
        async with asyncio.timeout(wait):
            await self._fill()
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_until(self, marker: bytes, wait: float = 5) -> bytes:
        """Bytes up to and including ``marker``."""
        async with asyncio.timeout(wait):
            at = await self._until(marker)
        if at is None:
            raise ConnectionError(f"closed before {marker!r}: {bytes(self.buffer)!r}")
        data = bytes(self.buffer[: at + len(marker)])
        del self.buffer[: at + len(marker)]
        return data

    async def closed(self, wait: float = 5) -> bool:
        """Wait for the server to close; True if it did (any unread bytes are dropped)."""
        try:
            async with asyncio.timeout(wait):
                while await self._fill():
                    self.buffer.clear()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Close our side."""
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def get(target: str = "/", host: str = "example.test", extra: str = "") -> bytes:
    """A minimal GET request."""
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
