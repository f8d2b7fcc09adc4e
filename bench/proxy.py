"""The proxy benchmark: ``python -m bench.proxy`` from the repository root.

One nginx serves a 1 KiB and a 1 MiB file; the same files are then fetched
in one run three ways — directly, through nginx ``proxy_pass`` (upstream
keep-alive, one worker) and through ``bluegreen serve`` (one process) — and
compared. See bench/README.md for what is measured, how, and the placement
of processes on CPUs. Every process it starts is stopped on exit, on Ctrl-C
and on SIGTERM; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench import bluegreen_target, idle, nginx, pacer, stalls
from bench.procs import (
    CpuUsage,
    Placement,
    Supervisor,
    free_port,
    missing_tools,
    pinned,
    process_tree,
    rss_bytes,
    snapshot,
    tool_path,
    wait_listening,
)
from bench.report import (
    REFERENCE,
    TARGETS,
    FixedRate,
    IdleMemory,
    Report,
    RoundsAtRate,
    Throughput,
    best_fixed_rate,
    best_throughput,
    render,
    rounds_at_rates,
    to_json,
)
from bench.wrk import WrkOutputError, parse_wrk_output, wrk_command

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# The tool each needed command comes from, for the "apt-get install" hint.
APT_PACKAGES = {"wrk": "wrk", "nginx": "nginx", "taskset": "util-linux", "cc": "gcc"}

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A target could not be started or measured; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Target:
    """Something wrk can load: a name, a port on 127.0.0.1 and the proxy's main pid."""

    name: str
    port: int
    proc: subprocess.Popen[bytes] | None  # None for "direct": no proxy in between
    log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        """The proxy's main process id."""
        return self.proc.pid if self.proc else None


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- options


def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {', '.join(choices)}; got {text!r}"
            )
        return items

    return parse


def _fixed_rate(text: str) -> str | float:
    if text in ("auto", "off"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected auto, off or requests per second; got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the fixed rate must be positive")
    return value


def _fractions(text: str) -> list[float]:
    """``--sweep``: comma-separated fractions in (0, 1], returned ascending without repeats."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(
            "expected comma-separated fractions of nginx's 1k peak, each greater than 0 "
            f"and at most 1 (e.g. 0.2,0.3,0.4,0.5); got {text!r}"
        )
    return sorted(set(values))


def _buffers(text: str) -> int | None:
    if text == "stock":
        return None
    if not text.isdigit() or not 4 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"expected stock or 4..1024 (KiB); got {text!r}")
    return int(text)


def _probe_seconds(text: str) -> float:
    """``--stall-probe``: seconds, 0 to skip, at most 60."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 (skip) to 60; got {text!r}")
    return value


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value: float = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench.proxy``."""
    p = argparse.ArgumentParser(
        prog="python -m bench.proxy",
        description="Compare bluegreen with nginx proxy_pass and with no proxy, in one run.",
    )
    p.add_argument(
        "--duration",
        type=_positive(float),
        default=None,
        help="seconds per measured run (default 10; 3 with --quick)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of unmeasured load before each run (default 2; 1 with --quick)",
    )
    p.add_argument(
        "--connections",
        type=_positive(int),
        default=50,
        help="concurrent keep-alive connections (default 50)",
    )
    p.add_argument(
        "--threads",
        type=_positive(int),
        default=None,
        help="wrk threads (default: one per load CPU)",
    )
    p.add_argument(
        "--repeat",
        type=_positive(int),
        default=1,
        help="measure each case N times and keep the best (default 1)",
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run (3 s per case)")
    p.add_argument(
        "--only",
        type=_csv(tuple(nginx.PAYLOADS)),
        default=list(nginx.PAYLOADS),
        metavar="PAYLOADS",
        help="payloads to measure: 1k, 1m or 1k,1m (default both)",
    )
    p.add_argument(
        "--targets",
        type=_csv(TARGETS),
        default=list(TARGETS),
        help="targets: direct,nginx,bluegreen (default all)",
    )
    p.add_argument(
        "--fixed-rate",
        type=_fixed_rate,
        default="auto",
        metavar="auto|off|RATE",
        help="open-loop latency run on 1k at RATE req/s; auto = half of nginx's "
        "peak in this run (default)",
    )
    p.add_argument(
        "--sweep",
        type=_fractions,
        default=[],
        metavar="F1,F2,...",
        help="also run the fixed-rate measurement at these fractions of nginx's 1k peak "
        "in this run (each 0 < F <= 1) and summarise latency vs load; needs nginx, "
        "the 1k payload and --fixed-rate not off",
    )
    p.add_argument(
        "--stall-probe",
        type=_probe_seconds,
        default=None,
        metavar="S",
        help="before the fixed-rate runs, a busy loop on every CPU at once for S seconds "
        "to measure how long the machine takes a CPU away; 0 skips it (default 3; 1 with --quick)",
    )
    p.add_argument(
        "--idle-connections",
        type=int,
        default=1000,
        metavar="N",
        help="idle client connections for the memory figure; 0 skips it (default 1000)",
    )
    p.add_argument(
        "--workers",
        type=_positive(int),
        default=None,
        help="worker processes for both proxies (passed to bluegreen as --workers; "
        "default: not passed, one worker); N>1 disables CPU pinning",
    )
    p.add_argument(
        "--nginx-buffers",
        type=_buffers,
        default=nginx.DEFAULT_BUFFER_KIB,
        metavar="KIB|stock",
        help="nginx proxy_buffer_size / proxy_buffers size in KiB, or stock for nginx's "
        f"4 KiB pages (default {nginx.DEFAULT_BUFFER_KIB})",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--output", choices=("table", "json"), default="table")
    p.add_argument(
        "--save",
        type=Path,
        metavar="FILE",
        help="also write the JSON report to FILE (for before/after comparisons)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (configs and logs) and print its path",
    )
    return p


def sweep_conflict(args: argparse.Namespace) -> str | None:
    """Why ``--sweep`` cannot run with the other options, or None when it can."""
    if not args.sweep:
        return None
    if args.fixed_rate == "off":
        return "--sweep needs the fixed-rate runs, but --fixed-rate is off; drop one of the two"
    if "1k" not in args.only:
        return "--sweep measures the 1k payload; add 1k to --only"
    if REFERENCE not in args.targets:
        return "--sweep rates are fractions of nginx's 1k peak; add nginx to --targets"
    return None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the options; usage errors exit 2 with argparse's message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = sweep_conflict(args)
    if problem:
        parser.error(problem)
    return args


def fixed_rate_plan(
    fixed_rate: str | float,
    sweep: Sequence[float],
    peak: float | None,
    connections: int,
) -> tuple[list[float], str]:
    """The fixed-rate phase's offered rates (ascending, no repeats) and the line explaining them.

    ``peak`` is nginx's 1k requests/s measured in this run (None if it was not).
    Without ``sweep`` this is the single ``--fixed-rate`` run; with it, each
    fraction of ``peak`` is one more rate, the single rate included.
    """
    if fixed_rate == "off":
        return [], ""
    if peak is not None and peak <= 0:
        peak = None  # nginx answered nothing: there is no peak to take a fraction of
    if fixed_rate != "auto":
        single = float(fixed_rate)
        note = f"  1k at {single:,.0f} req/s, {connections} connections"
    elif peak is None:
        if sweep:
            return [], (
                "  skipped: --fixed-rate auto and --sweep need nginx's 1k peak from this run, "
                "which was not measured; give a rate"
            )
        return [], "  skipped: --fixed-rate auto needs nginx's 1k peak; give a rate"
    else:
        single = float(round(peak / 2))
        note = (
            f"  1k at {single:,.0f} req/s = half of nginx's peak in this run, "
            f"{connections} connections"
        )
    if not sweep:
        return [single], note
    if peak is None:
        return [single], note + (
            "; --sweep skipped: it needs nginx's 1k peak from this run, which was not measured"
        )
    rates = sorted({single, *(max(1.0, float(round(peak * f))) for f in sweep)})
    listed = ", ".join(f"{rate:,.0f}" for rate in rates)
    fractions = ", ".join(f"{rate / peak:.2f}" for rate in rates)
    return rates, (
        f"  1k at {listed} req/s = {fractions} of nginx's peak ({peak:,.0f} req/s) "
        f"in this run, {connections} connections"
    )


# --------------------------------------------------------------------------- environment


def _first_line(argv: Sequence[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (r.stdout + r.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _bluegreen_revision() -> str:
    try:
        r = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""


def _data_plane_build() -> str:
    """Which build of bluegreen's data plane ``python -m bluegreen`` runs here.

    Asked of a child interpreter started outside the repository, as the
    served bluegreen is, so an installed compiled build is not shadowed by
    the sources next to this file.
    """
    probe = "from bluegreen.runtime import data_plane_build; print(data_plane_build())"
    try:
        r = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True, text=True, timeout=60, check=False, cwd="/",
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return r.stdout.strip() if r.returncode == 0 else "?"


def describe_machine(placement: Placement, args: argparse.Namespace) -> dict[str, str]:
    """The report's header: when, where, with what, and how the load was applied."""
    cpus = os.cpu_count() or 0
    nginx_v = _first_line([tool_path("nginx"), "-v"]).replace("nginx version: ", "")
    wrk_v = _first_line(["wrk", "-v"]).split(" [")[0]
    uvloop_v = _version("uvloop")
    revision = _bluegreen_revision()
    bluegreen_v = (
        f"bluegreen {_version('bluegreen') or '?'}"
        + (f" ({revision})" if revision else "")
        + f", data plane {_data_plane_build()}"
    )
    software = [nginx_v, wrk_v, f"Python {platform.python_version()}"]
    if uvloop_v:
        software.append(f"uvloop {uvloop_v} installed")
    software.append(bluegreen_v)
    load1, load5, _ = os.getloadavg()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpus} CPUs ({_cpu_model()}), Linux {platform.release()}, "
        f"load average {load1:.2f} (1 min) / {load5:.2f} (5 min) at start",
        "software": ", ".join(software),
        "placement": placement.describe(),
        "load": f"wrk {args.threads} thread(s), {args.connections} connections, "
        f"{args.duration:g} s per run after {args.warmup:g} s warm-up, best of {args.repeat}",
        "workers": f"{args.workers or 1} per proxy",
        "nginx": "proxy_pass, upstream keepalive 64, "
        + (
            f"{args.nginx_buffers} KiB response buffers"
            if args.nginx_buffers
            else "stock 4 KiB response buffers"
        ),
    }


# --------------------------------------------------------------------------- targets


def start_upstream(sup: Supervisor, tmp: Path, placement: Placement) -> nginx.Nginx:
    """The shared upstream: nginx with the payload files, on the load CPUs."""
    prefix = tmp / "upstream"
    nginx.prepare_prefix(prefix)
    for name, size in nginx.PAYLOADS.items():
        (prefix / "www" / name).write_bytes(nginx.payload_bytes(size))
    port = free_port()
    conf = nginx.render_upstream_conf(prefix, port, run_as_root=nginx.running_as_root())
    return nginx.start(sup, "upstream", prefix, conf, port, placement.load)


def start_nginx_proxy(
    sup: Supervisor,
    tmp: Path,
    placement: Placement,
    upstream: nginx.Nginx,
    workers: int,
    buffer_kib: int | None,
) -> nginx.Nginx:
    """The reference proxy, on the proxy CPUs."""
    prefix = tmp / "nginx-proxy"
    port = free_port()
    conf = nginx.render_proxy_conf(
        prefix,
        port,
        upstream.port,
        workers=workers,
        run_as_root=nginx.running_as_root(),
        buffer_kib=buffer_kib,
    )
    return nginx.start(sup, "nginx-proxy", prefix, conf, port, placement.proxy)


def start_bluegreen(
    sup: Supervisor,
    tmp: Path,
    placement: Placement,
    upstream: nginx.Nginx,
    workers: int | None,
) -> Target:
    """``bluegreen serve`` on the proxy CPUs, configured by a generated file."""
    reason = bluegreen_target.unavailable_reason()
    if reason:
        raise BenchError(f"bluegreen: cannot start: {reason}")
    workdir = tmp / "bluegreen"
    workdir.mkdir()
    port = free_port()
    config = workdir / "bluegreen.yaml"
    config.write_text(
        bluegreen_target.render_config(
            port=port, admin_port=free_port(), upstream_port=upstream.port
        )
    )
    argv = bluegreen_target.serve_command(
        config, port=port, upstream_port=upstream.port, workers=workers
    )
    proc = sup.start("bluegreen", pinned(argv, placement.proxy), cwd=workdir)
    try:
        wait_listening(port, deadline=time.monotonic() + 30, proc=proc)
    except (RuntimeError, TimeoutError) as exc:
        tail = _tail(sup.log_dir / "bluegreen.log")
        raise BenchError(f"bluegreen: did not start ({exc}); its log ends with:\n{tail}") from None
    return Target("bluegreen", port, proc, sup.log_dir / "bluegreen.log")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def validate(target: Target, payloads: Sequence[str]) -> None:
    """Each payload must come back 200 with exactly the upstream's bytes."""
    for payload in payloads:
        expected = nginx.payload_bytes(nginx.PAYLOADS[payload])
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
        try:
            conn.request("GET", f"/{payload}")
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise BenchError(f"{target.name}: GET /{payload} failed: {exc}") from None
        finally:
            conn.close()
        if resp.status != 200 or body != expected:
            raise BenchError(
                f"{target.name}: GET /{payload} answered {resp.status} with {len(body)} bytes; "
                f"expected 200 with the upstream's {len(expected)} bytes"
            )


# --------------------------------------------------------------------------- measurements


def measure_throughput(
    sup: Supervisor,
    target: Target,
    payload: str,
    upstream_pid: int,
    placement: Placement,
    args: argparse.Namespace,
) -> Throughput:
    """Warm up, then one wrk run with the CPU time of proxy and upstream around it."""
    url = f"http://127.0.0.1:{target.port}/{payload}"

    def wrk(duration: float) -> list[str]:
        cmd = wrk_command(
            url,
            threads=args.threads,
            connections=args.connections,
            duration_s=duration,
            wrk=tool_path("wrk"),
        )
        return pinned(cmd, placement.load)

    if args.warmup > 0:
        sup.run("wrk-warmup", wrk(args.warmup), timeout=args.warmup + 30)
    proxy_pids = process_tree(target.pid) if target.pid else []
    upstream_pids = process_tree(upstream_pid)
    before = snapshot(proxy_pids, upstream_pids)
    result = sup.run("wrk", wrk(args.duration), timeout=args.duration + 60)
    usage = CpuUsage.between(before, snapshot(proxy_pids, upstream_pids))
    if result.returncode != 0:
        raise BenchError(f"{target.name}: wrk {url} failed: {result.stderr.strip()}")
    return Throughput(
        target=target.name,
        payload=payload,
        wrk=parse_wrk_output(result.stdout),
        wall_s=usage.wall_s,
        proxy_cpu_s=usage.proxy_s if target.pid else None,
        upstream_cpu_s=usage.upstream_s,
        other_cpu_s=usage.other_s,
        proxy_processes=len(proxy_pids),
    )


def measure_fixed_rate(
    sup: Supervisor,
    binary: Path,
    target: Target,
    upstream_pid: int,
    rate: float,
    placement: Placement,
    args: argparse.Namespace,
    samples: Path,
) -> FixedRate:
    """One open-loop run of bench/pacer.c at ``rate`` on /1k."""
    pids = process_tree(target.pid) if target.pid else []
    before = snapshot(pids, process_tree(upstream_pid))
    result = pacer.run(
        sup,
        binary,
        port=target.port,
        path="/1k",
        rate=rate,
        connections=args.connections,
        warmup_s=max(1.0, args.warmup),
        duration_s=args.duration,
        cpus=placement.load,
        samples_file=samples,
    )
    usage = CpuUsage.between(before, snapshot(pids, process_tree(upstream_pid)))
    return FixedRate(
        target.name,
        "1k",
        result,
        usage.proxy_s if target.pid else None,
        usage.other_s / usage.wall_s,
    )


def measure_memory(target: Target, connections: int) -> IdleMemory:
    """RSS of the proxy's processes before and while ``connections`` idle clients are open."""
    assert target.pid is not None
    before = rss_bytes(process_tree(target.pid))
    socks = idle.open_idle(target.port, connections, "/1k")
    try:
        pids = process_tree(target.pid)
        during = rss_bytes(pids)
        workers = [pid for pid in pids if pid != target.pid] or [target.pid]
        largest = max(rss_bytes([pid]) for pid in workers)
        still_open = idle.count_open(socks)
    finally:
        idle.close_all(socks)
    return IdleMemory(target.name, len(pids), before, during, connections, still_open, largest)


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, tmp: Path) -> Report:
    """Start everything, measure, stop everything; return the report."""
    cpus = sorted(os.sched_getaffinity(0))
    if args.no_pin or (args.workers or 1) > 1:
        placement = Placement(None, None)
    else:
        placement = Placement.split(cpus)
    if placement.load is not None:
        os.sched_setaffinity(0, placement.load)  # the harness stays off the proxy's CPU
    if args.threads is None:
        args.threads = len(placement.load) if placement.load else max(1, len(cpus) // 2)
    report = Report(meta=describe_machine(placement, args))
    if placement.proxy is None:
        report.notes.append(
            "processes not pinned: proxy, wrk and upstream compete for all CPUs; "
            "figures are indicative only"
        )
    workers = args.workers or 1

    with Supervisor(tmp) as sup:
        log(f"bench: temporary directory {tmp}")
        upstream = start_upstream(sup, tmp, placement)
        targets: list[Target] = []
        for name in args.targets:
            try:
                if name == "direct":
                    target = Target("direct", upstream.port, None)
                elif name == "nginx":
                    proxy = start_nginx_proxy(
                        sup, tmp, placement, upstream, workers, args.nginx_buffers
                    )
                    target = Target("nginx", proxy.port, proxy.proc, proxy.prefix / "error.log")
                else:
                    target = start_bluegreen(sup, tmp, placement, upstream, args.workers)
                validate(target, args.only)
            except BenchError as exc:
                report.failures.append(str(exc))
                log(f"bench: {exc}")
                continue
            targets.append(target)
            log(f"bench: {name} ready on 127.0.0.1:{target.port}")

        runs: list[Throughput] = []
        for round_no in range(args.repeat):
            for payload in args.only:
                for target in targets:
                    try:
                        t = measure_throughput(
                            sup, target, payload, upstream.proc.pid, placement, args
                        )
                    except (BenchError, WrkOutputError) as exc:
                        report.failures.append(f"{target.name} {payload}: {exc}")
                        log(f"bench: {target.name} {payload}: {exc}")
                        continue
                    runs.append(t)
                    cpu = t.cpu_us_per_request
                    log(
                        f"bench: [{round_no + 1}/{args.repeat}] {payload:>2} {target.name:<9} "
                        f"{t.wrk.rps:>9,.0f} req/s  p99 {t.wrk.p99_s * 1e3:.2f} ms"
                        + (f"  {cpu:.1f} µs CPU/req" if cpu is not None else "")
                    )
        report.throughput = best_throughput(runs)
        for run_ in report.throughput:
            if run_.wrk.errors:
                report.failures.append(
                    f"{run_.target} {run_.payload}: {run_.wrk.errors} errors under load"
                )

        rates, report.fixed_rate_note = fixed_rate_rates(args, report.throughput)
        if rates and targets:
            binary = pacer.build(tmp, sup)
            if args.stall_probe:
                # Right before the fixed-rate runs, while the targets are idle.
                report.cpu_stalls = measure_cpu_stalls(sup, cpus, args.stall_probe, report.failures)
            report.fixed_rate, report.rounds = fixed_rate_phase(
                sup,
                binary,
                tmp,
                targets,
                upstream.proc.pid,
                rates,
                placement,
                args,
                report.failures,
            )

        if args.idle_connections > 0:
            for target in targets:
                if target.pid is None:
                    continue
                log(f"bench: {target.name}: opening {args.idle_connections} idle connections")
                try:
                    report.memory.append(measure_memory(target, args.idle_connections))
                except (OSError, ValueError) as exc:
                    report.failures.append(f"{target.name}: idle connections: {exc}")

        for target in targets:
            if target.proc is not None and target.proc.poll() is not None:
                tail = _tail(target.log_path) if target.log_path else "(no log)"
                report.failures.append(
                    f"{target.name} exited with code {target.proc.returncode} during the run; "
                    f"its log ends with:\n{tail}"
                )
        spilled = nginx.count_temp_file_warnings(
            (tmp / "nginx-proxy" / "error.log").read_text(errors="replace")
            if (tmp / "nginx-proxy" / "error.log").exists()
            else ""
        )
        if spilled:
            report.notes.append(
                f"nginx buffered {spilled} upstream responses to temporary files "
                "(proxy_buffering default); 1m figures include that disk I/O"
            )
    report.notes.extend(_standard_notes(report))
    return report


def measure_cpu_stalls(
    sup: Supervisor, cpus: Sequence[int], duration_s: float, failures: list[str]
) -> list[stalls.CpuStalls]:
    """The stall probe on every CPU at once, while no load runs; [] (and a failure) if it broke."""
    on = ",".join(map(str, cpus))
    log(f"bench: CPU stall probe, a busy loop on CPU {on} for {duration_s:g} s")
    try:
        found = stalls.measure(sup, cpus, duration_s, timeout_s=duration_s + 30)
    except (RuntimeError, ValueError, TimeoutError) as exc:
        failures.append(f"CPU stall probe: {exc}")
        log(f"bench: CPU stall probe: {exc}")
        return []
    for cpu in found:
        log(
            f"bench: stalls on CPU {cpu.cpu}: {cpu.gaps_over_1ms} gaps > 1 ms, "
            f"longest {cpu.longest_s * 1e3:.2f} ms"
        )
    return found


def fixed_rate_rates(
    args: argparse.Namespace, throughput: Sequence[Throughput]
) -> tuple[list[float], str]:
    """The fixed-rate phase's rates (none: it does not run) and the line explaining them."""
    if args.fixed_rate == "off":
        return [], ""
    if "1k" not in args.only:
        return [], "  skipped: the fixed-rate runs use the 1k payload (add it to --only)"
    peak = next(
        (t.wrk.rps for t in throughput if t.target == REFERENCE and t.payload == "1k"), None
    )
    return fixed_rate_plan(args.fixed_rate, args.sweep, peak, args.connections)


def fixed_rate_phase(
    sup: Supervisor,
    binary: Path,
    tmp: Path,
    targets: Sequence[Target],
    upstream_pid: int,
    rates: Sequence[float],
    placement: Placement,
    args: argparse.Namespace,
    failures: list[str],
) -> tuple[list[FixedRate], list[RoundsAtRate]]:
    """Open-loop runs at ``rates`` with the pacer ``binary``: the best runs, every round.

    Rates run one after another, ascending; at each rate ``--repeat`` rounds
    interleave the targets, and the best run per target and rate is kept;
    each round's p99 added (against direct's run of that round) is kept too.
    """
    samples = tmp / "samples.bin"
    runs: list[FixedRate] = []
    rounds: list[list[FixedRate]] = []
    for rate in rates:
        phase = f"fixed rate {rate:,.0f}/s" if len(rates) > 1 else "fixed rate"
        for round_no in range(args.repeat):
            rounds.append([])
            for target in targets:
                try:
                    f = measure_fixed_rate(
                        sup, binary, target, upstream_pid, rate, placement, args, samples
                    )
                except (RuntimeError, ValueError, TimeoutError) as exc:
                    failures.append(f"{target.name} {phase}: {exc}")
                    log(f"bench: {target.name} {phase}: {exc}")
                    continue
                runs.append(f)
                rounds[-1].append(f)
                p99 = f.result.latency.get("p99", float("nan"))
                log(
                    f"bench: [{round_no + 1}/{args.repeat}] fixed {rate:,.0f}/s "
                    f"{target.name:<9} achieved {f.result.achieved_rate:,.0f}/s  "
                    f"p99 {p99 * 1e3:.2f} ms"
                )
    return best_fixed_rate(runs), rounds_at_rates(rounds)


def _standard_notes(report: Report) -> list[str]:
    notes = [
        "proxy CPU µs/req: utime+stime of the proxy's processes (/proc/PID/stat; nginx: "
        "master + workers) over the run, divided by requests; per-core vs nginx = nginx's "
        "µs/req ÷ this target's (how much one core serves relative to nginx)",
    ]
    if any(t.busy is not None and t.busy < 0.9 for t in report.throughput):
        notes.append(
            "a proxy core below ~90% busy means something else capped the rate: wrk + upstream "
            "(the load CPU) or, if other load is high, other programs on the proxy's CPU; "
            "req/s vs nginx is then unreliable, per-core vs nginx less so"
        )
    notes.append(
        "other load: cores' worth of CPU used during the run by anything but the proxy, "
        "the upstream, wrk/pacer and this harness (other programs, unattributed interrupt "
        "time); a quiet machine shows a few hundredths"
    )
    load1 = os.getloadavg()[0]
    notes.append(f"load average at the end: {load1:.2f}")
    return notes


# --------------------------------------------------------------------------- entry point


@contextlib.contextmanager
def _interruptible(budget_s: float) -> Iterator[None]:
    """SIGTERM and SIGHUP act like Ctrl-C; the whole run is bounded by ``budget_s``."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the benchmark exceeded its time budget of {budget_s:.0f} s")

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    old_alarm = signal.signal(signal.SIGALRM, expire)
    signal.alarm(max(1, int(budget_s)))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        for s, handler in old.items():
            signal.signal(s, handler)


def _budget(args: argparse.Namespace) -> float:
    """Seconds the whole run may take: a margin plus a generous bound per measured run."""
    per_run = float(args.warmup + args.duration + 30)
    throughput_runs: int = args.repeat * len(args.only) * len(args.targets)
    # At most one rate per sweep fraction plus the single --fixed-rate (fewer if equal).
    rates = 0 if args.fixed_rate == "off" else 1 + len(args.sweep)
    fixed_runs: int = rates * args.repeat * len(args.targets)
    probe = args.stall_probe + 30 if args.stall_probe and args.fixed_rate != "off" else 0.0
    return 300.0 + per_run * (throughput_runs + fixed_runs) + probe


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 if a target failed, 2 on usage errors."""
    args = parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.stall_probe is None:
        args.stall_probe = 1.0 if args.quick else 3.0
    if args.warmup < 0:
        log("bench: --warmup must not be negative")
        return EXIT_USAGE
    needed = ["wrk", "nginx", "taskset"] + (["cc"] if args.fixed_rate != "off" else [])
    missing = missing_tools(needed)
    if missing:
        packages = " ".join(sorted({APT_PACKAGES[t] for t in missing}))
        log(
            f"bench: {', '.join(missing)} not found; nothing was installed. Install with:\n"
            f"    sudo apt-get install {packages}"
        )
        if "cc" in missing:
            log("  (cc builds the fixed-rate load generator; --fixed-rate off runs without it)")
        return EXIT_USAGE

    tmp = Path(tempfile.mkdtemp(prefix="bluegreen-bench-"))
    try:
        with _interruptible(_budget(args)):
            report = run(args, tmp)
    except KeyboardInterrupt:
        log("bench: interrupted; every process it started has been stopped")
        return 130
    except (BenchError, TimeoutError, RuntimeError, OSError) as exc:
        log(f"bench: {exc}")
        log(f"bench: logs are in {tmp}")
        args.keep = True
        return EXIT_FAILED
    finally:
        if args.keep:
            log(f"bench: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    data = json.dumps(to_json(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if args.save:
        args.save.write_text(data)
        log(f"bench: JSON report written to {args.save}")
    if args.output == "json":
        sys.stdout.write(data)
    else:
        sys.stdout.write(render(report))
    return EXIT_FAILED if report.failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
