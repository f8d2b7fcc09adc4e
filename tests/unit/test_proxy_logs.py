"""bluegreen.logs: JSON structlog output and the buffered access log."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import structlog

from bluegreen.logs import AccessLog, ThreadedWriter, configure_logging


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just enough of an event loop for AccessLog: a clock and call_later."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.scheduled: list[tuple[float, Any, _Handle]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> _Handle:
        handle = _Handle()
        self.scheduled.append((delay, callback, handle))
        return handle

    def call_soon(self, callback: Any) -> _Handle:
        return self.call_later(0.0, callback)


def make_log(max_records: int = 100) -> tuple[AccessLog, list[bytes], FakeLoop]:
    loop = FakeLoop()
    batches: list[bytes] = []
    log = AccessLog(batches.append, loop=loop, interval=0.2, max_records=max_records)  # type: ignore[arg-type]
    return log, batches, loop


def record(log: AccessLog, path: bytes = b"/p", **kw: Any) -> None:
    fields = {
        "at": 1000.5, "colour": "blue", "server": "127.0.0.1:9001", "method": b"GET",
        "path": path, "status": 200, "sent": 12, "duration": 0.0015, "reason": "weighted",
        "error": None,
    } | kw  # fmt: skip
    log.record(**fields)


def test_records_are_buffered_and_written_in_one_batch_by_the_timer() -> None:
    log, batches, loop = make_log()
    record(log)
    record(log, b"/q")
    assert batches == []  # nothing formatted on the request path
    assert len(loop.scheduled) == 1  # one timer for the batch, not one per record
    delay, flush, _ = loop.scheduled[0]
    assert delay == 0.2
    flush()
    (batch,) = batches
    lines = [json.loads(line) for line in batch.splitlines()]
    assert [line["path"] for line in lines] == ["/p", "/q"]
    first = lines[0]
    assert first == first | {
        "event": "access", "colour": "blue", "server": "127.0.0.1:9001", "method": "GET",
        "status": 200, "bytes": 12, "duration_s": 0.0015, "reason": "weighted", "error": None,
    }  # fmt: skip
    assert first["timestamp"].endswith("Z")


def test_a_full_buffer_is_written_soon_but_not_inside_the_request() -> None:
    log, batches, loop = make_log(max_records=3)
    for i in range(3):
        record(log, f"/{i}".encode())
    assert batches == []
    (timer, soon) = loop.scheduled
    assert timer[2].cancelled
    assert soon[0] == 0.0
    soon[1]()
    assert len(batches) == 1
    assert len(batches[0].splitlines()) == 3


def test_hostile_paths_and_errors_are_valid_json() -> None:
    log, batches, _ = make_log()
    record(log, b'/a"b\\c\x01\xff', error='upstream said "no"')
    log.flush()
    line = json.loads(batches[0])
    assert line["path"] == '/a"b\\c\x01\xff'
    assert line["error"] == 'upstream said "no"'


def test_threaded_writer_drops_instead_of_blocking() -> None:
    gate = threading.Event()

    class Blocking(io.BytesIO):
        def write(self, data: Any) -> int:
            gate.wait(5)
            return super().write(data)

    stream = Blocking()
    writer = ThreadedWriter(stream, max_batches=1)
    for _ in range(10):
        writer.write(b"a\nb\n")  # never blocks, even with the stream stuck
    assert writer.dropped >= 2 * 8
    gate.set()
    writer.close()
    assert stream.getvalue().count(b"\n") + writer.dropped == 20


def test_structlog_events_are_json_lines() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        structlog.get_logger("t").info("weights_changed", green_percent=10)
        structlog.get_logger("t").debug("hidden")
    finally:
        structlog.reset_defaults()
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert (event["event"], event["level"], event["green_percent"]) == (
        "weights_changed",
        "info",
        10,
    )
    assert "timestamp" in event
