"""The stall probe's busy loop: ``python bench/busyloop.py SECONDS [START]`` prints JSON.

A script (standard library only), run pinned to one CPU by
:func:`bench.stalls.measure`. From START (a ``time.monotonic()`` value,
the same clock in every process, so that the probes on all CPUs loop at
the same time; default: at once) it reads the monotonic clock as fast as it
can for SECONDS and records every gap between two reads over
:data:`RECORD_THRESHOLD_S`: time the process was not running. It prints one
JSON line: the time it looped, the gaps, how much of each it spent waiting
behind another task, and the CPUs it was allowed to run on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

RECORD_THRESHOLD_S = 0.0005  # gaps the probe records
SCHEDSTAT = "/proc/thread-self/schedstat"  # run time, run delay (ns), time slices


def run_delay_s() -> float | None:
    """Time this thread has spent runnable but waiting for a CPU; None where the kernel hides it."""
    try:
        with open(SCHEDSTAT) as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def busy_loop(
    duration_s: float, start_at: float | None = None
) -> tuple[float, list[float], list[float] | None]:
    """Read the clock from ``start_at`` for ``duration_s``.

    Returns the time looped, every gap over the threshold and, per gap, how
    much of it the loop spent runnable but waiting while another task had
    the CPU (the kernel's run delay; None where it cannot be read). The rest
    of a gap the kernel did not see: the host had the vCPU. ``start_at`` is
    a ``time.monotonic()`` value (None or already past: now); until then the
    process sleeps.
    """
    clock = time.monotonic
    threshold = RECORD_THRESHOLD_S  # a local: the loop looks up nothing global
    gaps: list[float] = []
    waits: list[float] = []
    if start_at is not None:
        time.sleep(max(0.0, start_at - clock()))
    delay = run_delay_s()
    start = prev = clock()
    end = start + duration_s
    # Allocation-free but for the floats the clock returns (no GC involved).
    while prev < end:
        now = clock()
        if now - prev > threshold:
            gaps.append(now - prev)
            if delay is not None:
                # Read after the gap (~10 µs, far under the threshold).
                later = run_delay_s()
                if later is not None:
                    waits.append(later - delay)
                delay = later  # unreadable from now on: no waits at all
            now = clock()
        prev = now
    return prev - start, gaps, (waits if delay is not None else None)


def main(argv: Sequence[str]) -> int:
    """``python bench/busyloop.py SECONDS [START]``: run the busy loop, print its gaps as JSON."""
    if len(argv) not in (1, 2):
        print("usage: python bench/busyloop.py SECONDS [START]", file=sys.stderr)
        return 2
    duration = float(argv[0])
    start_at = float(argv[1]) if len(argv) == 2 else None
    elapsed, gaps, waits = busy_loop(duration, start_at)
    cpus = sorted(os.sched_getaffinity(0))
    print(json.dumps({"duration_s": elapsed, "gaps_s": gaps, "waited_s": waits, "cpus": cpus}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
