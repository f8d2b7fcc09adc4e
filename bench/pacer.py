"""The fixed-rate load generator (bench/pacer.c): build it, run it, summarise its samples."""

from __future__ import annotations

import json
import struct
from array import array
from pathlib import Path

from bench.procs import Supervisor, pinned, tool_path
from bench.stats import RateResult, summarise

SOURCE = Path(__file__).with_name("pacer.c")


def build(out_dir: Path, sup: Supervisor) -> Path:
    """Compile pacer.c into ``out_dir`` with the system C compiler; return the binary."""
    binary = out_dir / "pacer"
    argv = [tool_path("cc"), "-O2", "-Wall", "-o", str(binary), str(SOURCE)]
    result = sup.run("cc", argv, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"cc failed to build {SOURCE}:\n{result.stderr.strip()}")
    return binary


def read_samples(data: bytes) -> tuple[list[float], list[float]]:
    """Latencies and lags in seconds from pacer's samples file (int64 n, n lat, n lag; ns)."""
    (n,) = struct.unpack_from("=q", data)
    values = array("q")
    values.frombytes(data[8 : 8 + 16 * n])
    if len(values) != 2 * n:
        raise ValueError(f"pacer samples: expected {2 * n} values, got {len(values)}")
    return [v / 1e9 for v in values[:n]], [v / 1e9 for v in values[n:]]


def parse_result(stdout: str, samples: bytes) -> RateResult:
    """Combine pacer's JSON counters line with the quantiles of its samples."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    try:
        counters = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError(f"pacer printed no JSON result: {stdout!r}") from None
    latencies, lags = read_samples(samples)
    return RateResult.from_counters(counters, latency=summarise(latencies), lag=summarise(lags))


def run(
    sup: Supervisor,
    binary: Path,
    *,
    port: int,
    path: str,
    rate: float,
    connections: int,
    warmup_s: float,
    duration_s: float,
    cpus: tuple[int, ...] | None,
    samples_file: Path,
) -> RateResult:
    """Hold ``rate`` requests/s against 127.0.0.1:``port`` and return what was measured."""
    argv = [
        str(binary),
        str(port),
        path,
        f"{rate:.3f}",
        str(connections),
        f"{warmup_s:g}",
        f"{duration_s:g}",
        str(samples_file),
    ]
    timeout = warmup_s + duration_s + 30
    result = sup.run("pacer", pinned(argv, cpus), timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"pacer failed ({result.returncode}): {result.stderr.strip()}")
    return parse_result(result.stdout, samples_file.read_bytes())
