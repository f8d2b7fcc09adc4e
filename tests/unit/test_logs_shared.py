"""Access-log batches from several workers on one stream never mix inside a line."""

from __future__ import annotations

import json
import os
import select
import threading

from hypothesis import given
from hypothesis import strategies as st

from bluegreen.logs import ThreadedWriter, line_chunks

LINES = st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=60)


@given(LINES, st.integers(min_value=1, max_value=600))
def test_line_chunks_cut_only_at_line_ends_and_keep_every_byte(
    lines: list[bytes], limit: int
) -> None:
    batch = b"".join(lines)
    pieces = line_chunks(batch, limit)
    assert b"".join(pieces) == batch
    for piece in pieces:
        assert piece.endswith(b"\n")
        assert len(piece) <= limit or piece.count(b"\n") == 1  # only a long line stands alone


def test_two_writers_on_one_pipe_keep_lines_whole() -> None:
    read_fd, write_fd = os.pipe()
    writers = [
        ThreadedWriter(os.fdopen(os.dup(write_fd), "wb"), shared=True, max_batches=10_000)
        for _ in range(2)
    ]
    os.close(write_fd)
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    batches = 200
    for n in range(batches):
        for w, writer in enumerate(writers):
            # ~20 KiB per batch: far above PIPE_BUF, so one write could interleave.
            line = json.dumps({"writer": w, "batch": n, "pad": "x" * 200}).encode() + b"\n"
            writer.write(line * 90)
    for writer in writers:
        writer.close(timeout=30)
        writer._stream.close()
    reader.join(30)
    os.close(read_fd)
    lines = bytes(received).splitlines()
    assert len(lines) == batches * 2 * 90
    assert all(json.loads(line)["pad"] == "x" * 200 for line in lines)
    assert select.PIPE_BUF < 90 * 250
