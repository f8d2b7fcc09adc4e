"""The stall probe's busy loop: ``python bench/busyloop.py SECONDS`` prints its gaps as JSON.

A script (standard library only), run pinned to one CPU by
:func:`bench.stalls.measure`. It reads the monotonic clock as fast as it
can for SECONDS and records every gap between two reads over
:data:`RECORD_THRESHOLD_S`: time the process was not running.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

RECORD_THRESHOLD_S = 0.0005  # gaps the probe records


def busy_loop(duration_s: float) -> tuple[float, list[float]]:
    """Read the clock for ``duration_s``; the elapsed time and every gap over the threshold."""
    clock = time.perf_counter
    gaps: list[float] = []
    start = prev = clock()
    end = start + duration_s
    while prev < end:
        now = clock()
        if now - prev > RECORD_THRESHOLD_S:
            gaps.append(now - prev)
        prev = now
    return prev - start, gaps


def main(argv: Sequence[str]) -> int:
    """``python bench/busyloop.py SECONDS``: run the busy loop, print its gaps as JSON."""
    if len(argv) != 1:
        print("usage: python bench/busyloop.py SECONDS", file=sys.stderr)
        return 2
    duration = float(argv[0])
    elapsed, gaps = busy_loop(duration)
    print(json.dumps({"duration_s": elapsed, "gaps_s": gaps}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
