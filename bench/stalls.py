"""How long the machine takes a CPU away while every CPU is busy: the CPU-stall probe.

A busy CPU still loses milliseconds at a time: to other programs and
kernel threads scheduled on it (on the VM the figures in bench/README.md
come from: the kernel's DAMON pageout thread every 500 ms, RCU, kworkers,
the sandbox's own services), and on a virtual machine to the host
descheduling the vCPU, which the guest's ``steal`` column may not count.
Such a stall lands in any proxy's tail, so the fixed-rate table's *p99
added* measures the machine as well as the proxy.

:func:`measure` runs one busy loop per CPU, all at once and each pinned to
its CPU, for a few seconds; each loop reads the monotonic clock as fast as
it can and records every gap between two reads over
:data:`RECORD_THRESHOLD_S`. A gap that long in a loop doing nothing else is
time the process was not running. The loop is ``bench/busyloop.py``, a
script with no imports beyond the standard library.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Supervisor, pinned

COUNT_THRESHOLD_S = 0.001  # gaps the report counts
# From starting the probes to their common start: a Python interpreter starts in
# about 20 ms here; a probe that starts later still loops its full duration.
START_DELAY_S = 0.3
BUSY_LOOP_SCRIPT = Path(__file__).with_name("busyloop.py")


@dataclass(frozen=True)
class CpuStalls:
    """What the busy loop on one CPU saw."""

    cpu: int | None  # None: not pinned
    duration_s: float
    gaps_s: tuple[float, ...]  # every gap over RECORD_THRESHOLD_S, in order
    # Per gap, the time runnable but waiting for the CPU (None: the kernel did not say).
    waited_s: tuple[float, ...] | None = None

    @property
    def gaps_over_1ms(self) -> int:
        return sum(1 for g in self.gaps_s if g > COUNT_THRESHOLD_S)

    @property
    def lost_s(self) -> float:
        return sum(self.gaps_s, 0.0)

    @property
    def longest_s(self) -> float:
        return max(self.gaps_s, default=0.0)

    @property
    def behind_tasks_s(self) -> float | None:
        """Of :attr:`lost_s`, the time another task had the CPU (the rest: the host had it)."""
        if self.waited_s is None:
            return None
        return sum((min(g, w) for g, w in zip(self.gaps_s, self.waited_s, strict=True)), 0.0)


def parse_probe_output(text: str, cpu: int | None) -> CpuStalls:
    """The probe's JSON line (``{"duration_s", "gaps_s", "waited_s", "cpus"}``).

    A probe meant for ``cpu`` that was allowed to run elsewhere was not
    pinned, and its gaps would say nothing about that CPU: ValueError.
    """
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("the stall probe printed nothing")
    try:
        data = json.loads(lines[-1])
        duration = float(data["duration_s"])
        gaps = tuple(float(g) for g in data["gaps_s"])
        ran_on = [int(c) for c in data["cpus"]]
        waited_raw = data.get("waited_s")
        waited = None if waited_raw is None else tuple(float(w) for w in waited_raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the stall probe printed {lines[-1][:200]!r}: {exc}") from None
    bad_waits = waited is not None and (len(waited) != len(gaps) or any(w < 0 for w in waited))
    if duration <= 0 or any(g <= 0 for g in gaps) or bad_waits:
        raise ValueError(f"the stall probe printed impossible figures: {lines[-1][:200]!r}")
    if cpu is not None and ran_on != [cpu]:
        raise ValueError(f"the stall probe for CPU {cpu} was allowed on CPUs {ran_on}: not pinned")
    return CpuStalls(cpu, duration, gaps, waited)


def measure(
    sup: Supervisor,
    cpus: Sequence[int] | None,
    duration_s: float,
    *,
    timeout_s: float,
    start_delay_s: float = START_DELAY_S,
) -> list[CpuStalls]:
    """Run the probe on every CPU in ``cpus`` at once (one unpinned probe when None).

    Every probe loops from the same instant, ``start_delay_s`` after they
    were started (time for the interpreters to start), for ``duration_s``.
    The probes are the supervisor's children (own process groups); all are
    stopped and forgotten by it before this returns, also on failure. One
    still running ``timeout_s`` after the start fails the measurement with
    TimeoutError.
    """
    start_at = time.monotonic() + start_delay_s
    argv = [sys.executable, str(BUSY_LOOP_SCRIPT), f"{duration_s:g}", repr(start_at)]
    started: list[tuple[int | None, Path, subprocess.Popen[bytes]]] = []
    try:
        for cpu in list(cpus) if cpus is not None else [None]:
            name = f"stall-probe-{'all' if cpu is None else cpu}"
            log_path = sup.log_dir / f"{name}.log"
            log_path.unlink(missing_ok=True)  # the supervisor appends
            proc = sup.start(name, pinned(argv, None if cpu is None else [cpu]))
            started.append((cpu, log_path, proc))
        deadline = time.monotonic() + timeout_s
        results = []
        for cpu, log_path, proc in started:
            try:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise TimeoutError(
                    f"the stall probe did not finish within {timeout_s:g} s"
                ) from None
            text = log_path.read_text(errors="replace")
            if code != 0:
                raise RuntimeError(
                    f"the stall probe on CPU {cpu} exited with {code}: {text[-300:]}"
                )
            results.append(parse_probe_output(text, cpu))
        return results
    finally:
        # Finished or not, none stays on the supervisor's list: it would
        # signal their (by then perhaps reused) process ids at exit.
        for _, _, proc in started:
            sup.stop(proc, grace=1.0)
