"""wrk: the command line for a closed-loop throughput run, and a parser for its text report.

The parser is pure and reads wrk 4's ``--latency`` report (see the captured
samples in tests/unit/test_bench_wrk.py). wrk prints times with a unit
(``us``, ``ms``, ``s``, ``m``, ``h``) and two decimals, and sizes in binary
units (``KB`` = 1024 bytes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}

_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)(B|KB|MB|GB|TB) read")
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$")
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class WrkOutputError(ValueError):
    """wrk's report lacks a figure the benchmark needs (wrong version, or wrk failed)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: totals, latency quantiles (seconds) and errors."""

    requests: int
    elapsed_s: float
    bytes_read: int
    rps: float
    p50_s: float
    p75_s: float
    p90_s: float
    p99_s: float
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    non_2xx: int = 0

    @property
    def errors(self) -> int:
        """Failed or non-2xx/3xx requests and socket errors, all together."""
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.timeouts
            + self.non_2xx
        )


def parse_wrk_output(text: str) -> WrkResult:
    """Parse the report of ``wrk --latency``; raise :class:`WrkOutputError` if it is incomplete."""
    total = rps = None
    quantiles: dict[str, float] = {}
    errors = (0, 0, 0, 0)
    non_2xx = 0
    for line in text.splitlines():
        if m := _TOTAL.match(line):
            total = (
                int(m.group(1)),
                float(m.group(2)) * _TIME_UNITS[m.group(3)],
                round(float(m.group(4)) * _SIZE_UNITS[m.group(5)]),
            )
        elif m := _PERCENTILE.match(line):
            quantiles[m.group(1)] = float(m.group(2)) * _TIME_UNITS[m.group(3)]
        elif m := _RPS.match(line):
            rps = float(m.group(1))
        elif m := _SOCKET_ERRORS.search(line):
            errors = (int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)))
        elif m := _NON_2XX.search(line):
            non_2xx = int(m.group(1))
    if total is None or rps is None:
        raise WrkOutputError("wrk report has no 'N requests in T' or 'Requests/sec' line")
    missing = [q for q in ("50", "75", "90", "99") if q not in quantiles]
    if missing:
        raise WrkOutputError(
            f"wrk report has no latency distribution ({', '.join(missing)}%); "
            "run wrk with --latency"
        )
    return WrkResult(
        requests=total[0],
        elapsed_s=total[1],
        bytes_read=total[2],
        rps=rps,
        p50_s=quantiles["50"],
        p75_s=quantiles["75"],
        p90_s=quantiles["90"],
        p99_s=quantiles["99"],
        connect_errors=errors[0],
        read_errors=errors[1],
        write_errors=errors[2],
        timeouts=errors[3],
        non_2xx=non_2xx,
    )


def wrk_command(
    url: str,
    *,
    threads: int,
    connections: int,
    duration_s: float,
    timeout_s: float = 5.0,
    wrk: str = "wrk",
) -> list[str]:
    """The wrk invocation for a closed-loop keep-alive run (wrk takes whole seconds)."""
    return [
        wrk,
        "--latency",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        url,
    ]


def describe_errors(result: WrkResult) -> Sequence[str]:
    """Human-readable error counts, empty when the run was clean."""
    parts = [
        (result.connect_errors, "connect"),
        (result.read_errors, "read"),
        (result.write_errors, "write"),
        (result.timeouts, "timeout"),
        (result.non_2xx, "non-2xx/3xx"),
    ]
    return [f"{n} {what}" for n, what in parts if n]
