"""One data-plane worker of ``bluegreen serve --workers N``, and the wire both ends speak.

A worker is the proxy and nothing else: no state store, no admin API, no
rollout controller (those stay in the control process, see
:mod:`bluegreen.workers`), so it imports only the data plane and stays small.
It is started as ``python -m bluegreen.worker FD`` where FD is its end of a
Unix socket pair with the control process; everything it needs arrives
there:

* ``init`` — its slot, the validated config, the address to listen on and the
  current state document. The worker binds its own listening socket with
  SO_REUSEPORT (the kernel spreads connections over the workers), applies
  the state and answers ``ready``.
* ``state`` — a newer state document: applied at once (weights, salt, mirror
  share, flags), then confirmed with ``applied`` and the worker's counters,
  so the control process reports this worker's version only once it runs it.
* ``drain`` / ``stop`` — finish in-flight requests (``timeouts.drain``) or cut.

The worker sends its counters (``stats``) every ``stats_interval`` and at
once when a colour it stopped sending to has no request left in flight (a
rollout is waiting for that drain). SIGTERM or SIGINT sent to a worker
directly drains it the same way (a second one cuts), and so does the
control process going away (end of the socket pair).

Messages are length-prefixed pickles: both ends are this program, on one
host, over a socket pair nobody else holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import io
import os
import pickle
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from bluegreen.config import Config
    from bluegreen.metrics import ColourSnapshot, PoolGauge
    from bluegreen.proxy import ProxyServer

EXIT_OK: Final = 0
EXIT_FORCED: Final = 1
EXIT_FAILED: Final = 2  # could not start (bad address, ...): restarting will not help

_HEADER: Final = struct.Struct("!I")
_MAX_MESSAGE: Final = 64 * 1024 * 1024


# --------------------------------------------------------------------------- the wire


@dataclass(frozen=True, slots=True)
class WorkerInit:
    """What a worker needs to start (the first message it reads)."""

    slot: int
    config: Config
    host: str
    port: int
    state: str  # the state document as JSON
    stats_interval: float = 0.25


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """A worker's cumulative counters (``in_flight`` is a level)."""

    blue: ColourSnapshot
    green: ColourSnapshot
    rejected: dict[int, int]
    mirrors: tuple[int, int, int]  # sent, dropped, failed
    pools: tuple[PoolGauge, ...]
    log_dropped: int


def _mappingproxy(data: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(data)


def _reduce_mappingproxy(proxy: MappingProxyType[Any, Any]) -> tuple[Any, ...]:
    return _mappingproxy, (dict(proxy),)


# The config's read-only mappings travel as what they wrap.
_DISPATCH: Final = {**copyreg.dispatch_table, MappingProxyType: _reduce_mappingproxy}


def encode(message: tuple[Any, ...]) -> bytes:
    """One message as bytes on the wire."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(message)
    body = buffer.getvalue()
    return _HEADER.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at the end of the stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > _MAX_MESSAGE:
            raise ValueError(f"control message of {size} bytes")
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    # The other end is this program in a process we started (see the module docstring).
    message = pickle.loads(body)  # noqa: S301
    if not isinstance(message, tuple) or not message:
        raise ValueError("malformed control message")
    return message


def stats_of(proxy: ProxyServer) -> WorkerStats:
    """The proxy's counters as one message body."""
    m = proxy.metrics
    return WorkerStats(
        blue=m.blue.snapshot(),
        green=m.green.snapshot(),
        rejected=dict(m.rejected),
        mirrors=(m.mirrors_sent, m.mirrors_dropped, m.mirrors_failed),
        pools=tuple(m.pool_gauges()),
        log_dropped=m.access_log_dropped(),
    )


# --------------------------------------------------------------------------- the worker


class _Worker:
    """The worker's life: start the proxy, follow the control process, drain, exit."""

    def __init__(self, writer: asyncio.StreamWriter, init: WorkerInit) -> None:
        from bluegreen.flags import FlagHeaderCache

        self.writer = writer
        self.init = init
        self.flags = FlagHeaderCache()
        self.proxy: ProxyServer | None = None
        self.applied_weights: dict[str, int] = {}
        self.stop = asyncio.Event()  # leave: drain, or cut when ``cut`` is set too
        self.cut = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def send(self, *message: Any) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    def apply(self, state_json: str) -> int:
        """Apply a state document; return its version."""
        from bluegreen.routing import Colour
        from bluegreen.state.model import from_json

        doc = from_json(state_json)
        proxy = self.proxy
        assert proxy is not None  # noqa: S101  # started first
        previous = self.applied_weights
        proxy.set_routing(
            doc.green_weight_bp, salt=doc.salt.encode("utf-8"), mirror_bp=doc.mirror_bp
        )
        self.flags.replace(doc.flags.values())
        self.applied_weights = {c.value: doc.weight_bp(c) for c in Colour}
        for colour in Colour:
            if previous.get(colour.value) and not doc.weight_bp(colour):
                self._report_when_drained(colour)
        return doc.version

    def _report_when_drained(self, colour: Any) -> None:
        proxy = self.proxy
        assert proxy is not None  # noqa: S101

        async def wait() -> None:
            if await proxy.wait_drained(colour, 600.0):
                self.send("stats", stats_of(proxy))

        task = asyncio.get_running_loop().create_task(wait())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def drain_requested(self) -> None:
        # Idempotent: a terminal's Ctrl-C or systemd's stop signals the whole process
        # group, so the worker sees the signal and the control process's "drain"
        # message for one and the same request. Only "stop" cuts.
        self.stop.set()

    def cut_requested(self) -> None:
        self.cut.set()
        self.stop.set()

    async def ticker(self) -> None:
        proxy = self.proxy
        assert proxy is not None  # noqa: S101
        while True:
            await asyncio.sleep(self.init.stats_interval)
            self.send("stats", stats_of(proxy))

    async def follow(self, reader: asyncio.StreamReader) -> None:
        """Handle control messages until the control process goes away."""
        while True:
            message = await read_message(reader)
            if message is None:
                self.drain_requested()  # the control process is gone: drain and leave
                return
            kind = message[0]
            if kind == "state":
                version = self.apply(message[1])
                assert self.proxy is not None  # noqa: S101
                self.send("applied", version, stats_of(self.proxy))
            elif kind == "drain":
                self.drain_requested()
            elif kind == "stop":
                self.cut_requested()


async def _run(channel: socket.socket) -> int:
    import structlog

    from bluegreen.logs import AccessLog, ThreadedWriter
    from bluegreen.proxy import ProxyServer, create_listener
    from bluegreen.runtime import freeze_startup_objects
    from bluegreen.shutdown import drain_unless_cut

    log = structlog.get_logger("bluegreen.worker")
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=channel)
    first = await read_message(reader)
    if first is None or first[0] != "init":
        return EXIT_FAILED
    init: WorkerInit = first[1]
    structlog.contextvars.bind_contextvars(worker=init.slot)
    config = init.config
    worker = _Worker(writer, init)
    stream = None
    access_writer = None
    if config.access_log.enabled:
        path = config.access_log.path
        # Opened once before serving, as serve does; closed below.
        stream = sys.stdout.buffer if path == "-" else open(path, "ab")  # noqa: SIM115, ASYNC230
        access_writer = ThreadedWriter(stream, shared=True)  # N workers, one stream
    access_log = AccessLog(access_writer.write, loop=loop) if access_writer is not None else None
    try:
        from bluegreen.config import Address

        proxy = ProxyServer(
            config, access_log=access_log, request_header_hook=worker.flags.header_line
        )
        if access_writer is not None:
            proxy.metrics.access_log_dropped = lambda: access_writer.dropped
        worker.proxy = proxy
        try:
            sock = create_listener(Address(init.host, init.port), reuse_port=True)
        except OSError as exc:
            log.error("worker_listen_failed", address=f"{init.host}:{init.port}", error=str(exc))
            return EXIT_FAILED
        await proxy.start(sock)
        version = worker.apply(init.state)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.drain_requested)
        worker.send("ready", os.getpid(), version, stats_of(proxy))
        freeze_startup_objects()
        follow = loop.create_task(worker.follow(reader))
        ticker = loop.create_task(worker.ticker())
        await worker.stop.wait()
        log.info("worker_draining", connections=len(proxy.connections))
        if worker.cut.is_set():
            await proxy.stop()
            return EXIT_FORCED
        drained = await drain_unless_cut(
            proxy.drain(config.timeouts.drain), worker.cut.wait(), proxy.stop
        )
        if drained is None:
            return EXIT_FORCED
        ticker.cancel()
        follow.cancel()
        worker.send("stats", stats_of(proxy))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        log.info("worker_stopped", drained=drained)
        return EXIT_OK
    finally:
        for task in list(worker.tasks):
            task.cancel()
        if access_writer is not None:
            access_writer.close()
        if stream is not None and stream is not sys.stdout.buffer:
            stream.close()
        writer.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bluegreen.worker FD``."""
    # structlog loads rich whenever it is importable (here only a test dependency);
    # a worker logs JSON only, and rich would cost ~6 MB in every worker.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # None blocks the import
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m bluegreen.worker FD  (started by bluegreen serve)", file=sys.stderr)
        return EXIT_FAILED
    from bluegreen.logs import configure_logging
    from bluegreen.runtime import loop_factory

    configure_logging()
    channel = socket.socket(fileno=int(args[0]))
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_run(channel))


if __name__ == "__main__":
    # Run as bluegreen.worker, not __main__, so the message classes unpickle by that name.
    from bluegreen import worker

    raise SystemExit(worker.main())
