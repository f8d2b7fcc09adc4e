"""Processes of a benchmark run: start them pinned, read their CPU and memory, always stop them.

Every child runs in its own session (process group), so stopping it also stops
whatever it forked (nginx workers, bluegreen workers). :class:`Supervisor` is a
context manager: leaving it — normally, on an exception or on Ctrl-C — stops
every child it started, first politely (SIGTERM), then with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- /proc parsing (pure)


def parse_stat(text: str) -> tuple[int, int]:
    """``(ppid, utime+stime in clock ticks)`` from the text of ``/proc/PID/stat``.

    The command name (field 2) may contain spaces and parentheses, so fields
    are counted from the last ``)``.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    return int(rest[1]), int(rest[11]) + int(rest[12])


def parse_vmrss(text: str) -> int:
    """Resident set size in bytes from the text of ``/proc/PID/status``."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"/proc status: unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError("/proc status has no VmRSS line (a kernel thread or a zombie?)")


def parse_cpu_busy(text: str) -> int:
    """Busy clock ticks of all CPUs together from the text of ``/proc/stat``.

    Busy = user + nice + system + irq + softirq + steal (everything but idle
    and iowait); guest time is already inside user.
    """
    for line in text.splitlines():
        if line.startswith("cpu "):
            fields = [int(v) for v in line.split()[1:]]
            user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
            return user + nice + system + irq + softirq + steal
    raise ValueError("/proc/stat has no aggregate 'cpu' line")


# --------------------------------------------------------------------------- /proc reading


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (nginx master + workers, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        text = _read(f"/proc/{entry}/stat")
        if text is None:
            continue
        ppid, _ = parse_stat(text)
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (gone ones count 0)."""
    ticks = 0
    for pid in pids:
        text = _read(f"/proc/{pid}/stat")
        if text is not None:
            ticks += parse_stat(text)[1]
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy since boot (see :func:`parse_cpu_busy`)."""
    with open("/proc/stat", encoding="ascii") as f:
        return parse_cpu_busy(f.read()) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU seconds of this process plus its children that have been waited for."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of VmRSS of ``pids`` (shared pages of a master and its workers count twice)."""
    total = 0
    for pid in pids:
        text = _read(f"/proc/{pid}/status")
        if text is not None:
            total += parse_vmrss(text)
    return total


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU counters at one instant, to be subtracted from a later snapshot."""

    wall: float
    machine: float
    own: float
    proxy: float
    upstream: float


def snapshot(proxy_pids: Iterable[int], upstream_pids: Iterable[int]) -> CpuSnapshot:
    """Read the wall clock, the machine's busy time, ours, the proxy's and the upstream's."""
    return CpuSnapshot(
        wall=time.monotonic(),
        machine=machine_busy_seconds(),
        own=own_cpu_seconds(),
        proxy=cpu_seconds(proxy_pids),
        upstream=cpu_seconds(upstream_pids),
    )


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU seconds spent between two snapshots, by whom."""

    wall_s: float
    proxy_s: float
    upstream_s: float
    # Busy time of the machine not spent by the proxy, the upstream, this
    # harness or its finished children (wrk, pacer): other people's work, plus
    # interrupt time the kernel charges to no process. Large values mean noise.
    other_s: float

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot) -> CpuUsage:
        """The usage from snapshot ``a`` to the later snapshot ``b``."""
        proxy = b.proxy - a.proxy
        upstream = b.upstream - a.upstream
        other = (b.machine - a.machine) - (b.own - a.own) - proxy - upstream
        return cls(b.wall - a.wall, proxy, upstream, max(0.0, other))


# --------------------------------------------------------------------------- placement


@dataclass(frozen=True, slots=True)
class Placement:
    """Which CPUs the proxy under test gets and which the load (wrk, upstream, harness) gets.

    ``None`` means "not pinned" (a single-CPU machine, or ``--no-pin``).
    """

    proxy: tuple[int, ...] | None
    load: tuple[int, ...] | None

    @classmethod
    def split(cls, cpus: Sequence[int], *, proxy_cpus: int = 1) -> Placement:
        """The last ``proxy_cpus`` CPUs for the proxy, the rest for the load."""
        ordered = sorted(cpus)
        if len(ordered) <= proxy_cpus:
            return cls(None, None)
        return cls(tuple(ordered[-proxy_cpus:]), tuple(ordered[:-proxy_cpus]))

    def describe(self) -> str:
        """One line for the report."""
        if self.proxy is None or self.load is None:
            return "not pinned: proxy, wrk and upstream share all CPUs"
        return (
            f"proxy under test on CPU {_cpulist(self.proxy)}; "
            f"wrk, upstream nginx and harness on CPU {_cpulist(self.load)}"
        )


def _cpulist(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def pinned(argv: Sequence[str], cpus: Sequence[int] | None) -> list[str]:
    """``argv`` prefixed with ``taskset -c CPUS`` (children inherit the mask)."""
    if cpus is None:
        return list(argv)
    return ["taskset", "-c", _cpulist(cpus), *argv]


# --------------------------------------------------------------------------- sockets


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, *, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; fail if ``proc`` exits first."""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.args!r} exited with {proc.returncode} before listening"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} yet") from None
            time.sleep(0.05)  # polling a condition with a deadline, not synchronising


# --------------------------------------------------------------------------- supervision


def missing_tools(tools: Iterable[str]) -> list[str]:
    """The names among ``tools`` not found on PATH (nor in /usr/sbin, where nginx lives)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return [t for t in tools if shutil.which(t, path=path) is None]


def tool_path(tool: str) -> str:
    """Absolute path of ``tool`` (see :func:`missing_tools`)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    found = shutil.which(tool, path=path)
    if found is None:
        raise FileNotFoundError(tool)
    return found


class Supervisor:
    """Starts children in their own process groups and stops all of them on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self, name: str, argv: Sequence[str], *, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout and stderr going to ``<log_dir>/<name>.log``."""
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        self._children.append(proc)
        return proc

    def run(
        self, name: str, argv: Sequence[str], *, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion (stdout captured), killing it after ``timeout`` seconds."""
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._children.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise TimeoutError(f"{name} did not finish within {timeout:.0f}s") from None
        finally:
            if proc.poll() is not None:
                self._children.remove(proc)
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def stop(
        self, proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 10.0
    ) -> None:
        """Signal ``proc``'s whole process group, wait up to ``grace`` s, then SIGKILL it."""
        if proc.poll() is None:
            _killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Workers left behind by a master that died first still hold the group.
        _killpg(proc.pid, signal.SIGKILL)
        if proc in self._children:
            self._children.remove(proc)

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        for proc in reversed(list(self._children)):
            self.stop(proc, grace=5.0)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
