"""Pure-Python cost of the proxy's hot path per request, with fake transports.

``python -m bench.hotpath`` drives one :class:`~bluegreen.proxy.ClientConnection`
and one pooled :class:`~bluegreen.upstream.UpstreamConnection` through
keep-alive request/response cycles without sockets: the client "sends" a
request (``data_received``), the proxy writes the upstream request into a
fake transport, the upstream "answers" with a captured nginx response, and
the proxy writes the client response. What is timed is everything bluegreen
does in Python (and in llhttp) per request; the syscalls, the event loop and
the kernel's TCP work are not in it. That makes it a steady figure on a busy
machine, good for comparing two versions of the hot path; the end-to-end
benchmark (``python -m bench.proxy``) remains the judge.

It measures the bluegreen it imports. For a ``BLUEGREEN_COMPILE=1`` install,
run it as a file from that environment (``.venv-compiled/bin/python
bench/hotpath.py``): ``-m`` from the repository root would import the sources.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from bluegreen import proxy as proxy_module
from bluegreen.config import Config, with_overrides
from bluegreen.proxy import ClientConnection, ProxyServer
from bluegreen.routing import Colour
from bluegreen.runtime import data_plane_build
from bluegreen.upstream import UpstreamConnection

# What wrk sends, and what a browser sends (more headers, a cookie).
REQUEST_WRK = b"GET /1k HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
REQUEST_BROWSER = (
    b"GET /1k HTTP/1.1\r\nHost: shop.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\nCookie: session=abc123; theme=dark\r\n"
    b"Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\nSec-Fetch-Site: none\r\n\r\n"
)
# nginx 1.22 serving a 1 KiB static file (the bench's upstream).
RESPONSE_NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b"Last-Modified: Thu, 26 Nov 2026 11:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6765-400"\r\n'
    b"Accept-Ranges: bytes\r\n\r\n" + b"x" * 1024
)


class FakeTransport:
    """Enough of asyncio.Transport for the hot path: remembers the bytes written."""

    def __init__(self) -> None:
        self.written = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.written += 1
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        return

    def resume_reading(self) -> None:
        return

    def close(self) -> None:
        return

    def abort(self) -> None:
        return


def _setup(proxy: ProxyServer) -> tuple[ClientConnection, FakeTransport, FakeTransport]:
    client = ClientConnection(proxy)
    client_transport = FakeTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]  # a fake on purpose
    server = proxy.sets[Colour.BLUE].servers[0]
    conn = UpstreamConnection(server)
    upstream_transport = FakeTransport()
    conn.connection_made(upstream_transport)  # type: ignore[arg-type]
    server.open += 1
    server.release(conn, proxy.loop.time())
    return client, client_transport, upstream_transport


async def measure(request: bytes, response: bytes, count: int) -> float:
    """Microseconds of Python per request/response cycle (best of 5 rounds)."""
    config = with_overrides(Config(), blue=["127.0.0.1:9001"], green=["127.0.0.1:9002"])
    proxy = ProxyServer(config)
    client, client_transport, upstream_transport = _setup(proxy)
    server = proxy.sets[Colour.BLUE].servers[0]
    conn = server.idle[-1]
    best = float("inf")
    for _ in range(5):
        gc.collect()
        start = time.perf_counter()
        for _ in range(count):
            client.data_received(request)
            conn.data_received(response)
        best = min(best, time.perf_counter() - start)
    if client_transport.last[-1024:] != response[-1024:] or not upstream_transport.written:
        raise SystemExit("hot path did not proxy the response: bench is broken")
    return best / count * 1e6


def main(argv: list[str] | None = None) -> int:
    """Print µs per request for a wrk-like and a browser-like request."""
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--count", type=int, default=20000, help="requests per round")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop")
    args = parser.parse_args(argv)
    factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            pass
    print(f"data plane: {data_plane_build()} ({proxy_module.__file__})")
    with asyncio.Runner(loop_factory=factory) as runner:
        for name, request in (("wrk request", REQUEST_WRK), ("browser request", REQUEST_BROWSER)):
            us = runner.run(measure(request, RESPONSE_NGINX, args.count))
            print(f"{name:16} + nginx 1k response: {us:6.2f} µs of Python per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
