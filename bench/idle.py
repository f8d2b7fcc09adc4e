"""Idle keep-alive client connections, to measure what a proxy keeps per connection.

Each connection sends one GET, reads the whole response and then stays open
and silent, as a browser's keep-alive connection does between page loads.
The proxy has therefore allocated everything a served connection needs, and
nothing is in flight when its memory is read.
"""

from __future__ import annotations

import resource
import socket
import time

_HEAD_END = b"\r\n\r\n"


def request_bytes(port: int, path: str) -> bytes:
    """A keep-alive GET for ``path`` on 127.0.0.1:``port``."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def parse_response_head(head: bytes) -> tuple[int, int]:
    """``(status, content_length)`` of a response head (without the blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            return int(parts[1]), int(value.strip())
    raise ValueError("response has no Content-Length; the benchmark's files always do")


def _read_response(sock: socket.socket) -> int:
    buf = b""
    while _HEAD_END not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    head, _, body = buf.partition(_HEAD_END)
    status, length = parse_response_head(head)
    remaining = length - len(body)
    while remaining > 0:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("connection closed in the middle of the body")
        remaining -= len(chunk)
    return status


def ensure_fd_limit(needed: int) -> None:
    """Raise this process's open-file soft limit to ``needed`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < needed:
            raise OSError(
                f"open-file limit {hard} is below the {needed} needed; "
                "raise it (ulimit -n) or lower --idle-connections"
            )


def open_idle(port: int, count: int, path: str, *, timeout: float = 60.0) -> list[socket.socket]:
    """Open ``count`` connections, each served one request; return them still open."""
    ensure_fd_limit(count + 256)
    request = request_bytes(port, path)
    deadline = time.monotonic() + timeout
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                raise TimeoutError(f"opening {count} idle connections took over {timeout:.0f}s")
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            sock.sendall(request)
            status = _read_response(sock)
            if status != 200:
                raise ConnectionError(f"GET {path} answered {status} instead of 200")
    except BaseException:
        close_all(socks)
        raise
    return socks


def count_open(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has not closed (nothing is read from them)."""
    still = 0
    for sock in socks:
        sock.setblocking(False)  # a socket with a timeout would wait for data to peek at
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            still += 1
        except OSError:
            continue
        else:
            still += bool(data)
    return still


def close_all(socks: list[socket.socket]) -> None:
    """Close every socket."""
    for sock in socks:
        sock.close()
