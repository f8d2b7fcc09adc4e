"""Child processes of the demo: started in their own process group, awaited, always stopped.

Theory of operation
-------------------
Every child (an app instance, the proxy, the embedded PostgreSQL) runs in a
**new session**, so its process group is its own: a Ctrl-C in the terminal
reaches only the demo, which then stops the children itself, in reverse start
order (the proxy before the apps, the apps before the database), each with
its own stop signal and grace time, then SIGKILL for the whole group. On
Linux each child also gets a parent-death signal (``PR_SET_PDEATHSIG``), so
even a demo killed with SIGKILL, which runs no cleanup at all, takes its
children with it.

Output goes to one log file per child (``<log_dir>/<name>.log``) rather than
the terminal, so the demo's report stays readable; when a child fails, the
error carries the last lines of its log.

Readiness is awaited, never slept for: :meth:`ManagedProcess.wait_http` polls
a URL, :meth:`~ManagedProcess.wait_port` a TCP port and
:meth:`~ManagedProcess.wait_output` a line of the log; each fails at once if
the child exits, with its exit code and the tail of its log.

:class:`Supervisor` is the async context manager that owns children; on exit,
also by exception or cancellation (Ctrl-C), it stops them all. A second
cancellation during that stop escalates to SIGKILL for every group at once.
:func:`cancel_on_signals` turns SIGTERM (and SIGHUP) into the same
cancellation that asyncio gives SIGINT, so every way of ending the demo runs
the cleanup.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

import aiohttp
import structlog

from bluegreen.errors import DemoProcessError

log = structlog.get_logger("bluegreen.demo.processes")

POLL_INTERVAL: Final = 0.05
DEFAULT_STOP_TIMEOUT: Final = 10.0
TAIL_LINES: Final = 20
_PR_SET_PDEATHSIG: Final = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0, read, close).

    Another process may take it before the caller binds it; callers that
    can, start the child on port 0 and read the port from its output.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def python_argv(module: str, *args: str) -> list[str]:
    """``python -m module args...`` with the interpreter running the demo."""
    return [sys.executable, "-m", module, *args]


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when the demo dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    # Resolved here, in the parent: between fork and exec the child only calls it.

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return set_pdeathsig


_SET_PDEATHSIG: Final = _pdeathsig_setter()


def _signal_group(pid: int, signum: int) -> bool:
    """Send ``signum`` to the process group led by ``pid``; False if it is gone."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The group leader changed user (the embedded PostgreSQL as root); its pid still works.
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return False
    return True


class ManagedProcess:
    """One child process in its own process group, with its output in a log file."""

    def __init__(
        self,
        name: str,
        popen: subprocess.Popen[bytes],
        log_path: Path,
        *,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.name = name
        self._popen = popen
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.started_at = time.monotonic()
        self.killed = False  # True once kill() or a stop escalated to SIGKILL

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} returncode={self.returncode}>"

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self._popen.poll()

    @property
    def running(self) -> bool:
        """Whether the child has not exited yet."""
        return self.returncode is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of the child's log."""
        try:
            with self.log_path.open("rb") as stream:
                stream.seek(0, os.SEEK_END)
                size = stream.tell()
                stream.seek(max(0, size - 64 * 1024))
                text = stream.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def exited_error(self, waiting_for: str) -> DemoProcessError:
        """The error for "exited while the demo waited for ``waiting_for``", with the log tail."""
        code = self.returncode
        how = (
            f"was killed by {_signal_name(-code)}"
            if code is not None and code < 0
            else (f"exited with code {code}")
        )
        return DemoProcessError(
            self.name,
            f"{self.name} {how} while waiting for {waiting_for}. "
            f"Last lines of {self.log_path}:\n{self.tail()}",
            log_path=str(self.log_path),
        )

    def _timeout_error(self, waiting_for: str, seconds: float, last: str) -> DemoProcessError:
        return DemoProcessError(
            self.name,
            f"{self.name} (pid {self.pid}) not ready after {seconds:g}s waiting for "
            f"{waiting_for} (last attempt: {last}). Last lines of {self.log_path}:\n{self.tail()}",
            log_path=str(self.log_path),
        )

    async def wait_http(
        self,
        url: str,
        *,
        within: float = 30.0,
        expect: Callable[[int], bool] = lambda status: status == 200,
    ) -> int:
        """Poll ``url`` until its status passes ``expect``; returns that status."""
        deadline = time.monotonic() + within
        last = "no attempt yet"
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if not self.running:
                    raise self.exited_error(url)
                try:
                    async with session.get(url) as response:
                        await response.read()
                        if expect(response.status):
                            return response.status
                        last = f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if time.monotonic() >= deadline:
                    raise self._timeout_error(url, within, last)
                await asyncio.sleep(POLL_INTERVAL)

    async def wait_port(self, host: str, port: int, *, within: float = 30.0) -> None:
        """Wait until ``host:port`` accepts TCP connections."""
        deadline = time.monotonic() + within
        last = "no attempt yet"
        while True:
            if not self.running:
                raise self.exited_error(f"{host}:{port}")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            if time.monotonic() >= deadline:
                raise self._timeout_error(f"{host}:{port}", within, last)
            await asyncio.sleep(POLL_INTERVAL)

    async def wait_output(
        self, pattern: str | re.Pattern[str], *, within: float = 30.0
    ) -> re.Match[str]:
        """Wait for a line of the log matching ``pattern``; returns the match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + within
        offset = 0
        pending = ""
        while True:
            exited = not self.running  # read once more after exit: the line may be there
            try:
                with self.log_path.open("rb") as stream:
                    stream.seek(offset)
                    chunk = stream.read()
                    offset += len(chunk)
            except OSError:
                chunk = b""
            pending += chunk.decode("utf-8", "replace")
            *lines, pending = pending.split("\n")
            for line in lines:
                if match := regex.search(line):
                    return match
            if exited:
                raise self.exited_error(f"a line matching {regex.pattern!r}")
            if time.monotonic() >= deadline:
                raise self._timeout_error(
                    f"a line matching {regex.pattern!r}", within, "not printed yet"
                )
            await asyncio.sleep(POLL_INTERVAL)

    def send_signal(self, signum: int) -> bool:
        """Send ``signum`` to the child's process group; False if it already exited."""
        if not self.running:
            return False
        return _signal_group(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole group now, without waiting (``bluegreen demo --kill green``)."""
        if self.running:
            self.killed = True
            _signal_group(self.pid, signal.SIGKILL)

    async def wait(self, within: float | None = None) -> int:
        """Wait for the exit; returns the exit code. TimeoutError after ``within`` seconds."""
        deadline = None if within is None else time.monotonic() + within
        while (code := self.returncode) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} still running after {within:g}s")
            await asyncio.sleep(POLL_INTERVAL)
        return code

    async def stop(self, within: float | None = None) -> int:
        """Stop gracefully (``stop_signal``), then SIGKILL after ``within`` seconds.

        Returns the exit code. Leftover members of the group are killed too.
        """
        grace = self.stop_timeout if within is None else within
        if self.running:
            self.send_signal(self.stop_signal)
            try:
                await self.wait(grace)
            except TimeoutError:
                log.warning("process_stop_forced", name=self.name, pid=self.pid, after_s=grace)
                self.killed = True
                _signal_group(self.pid, signal.SIGKILL)
        code = await self.wait()
        _signal_group(self.pid, signal.SIGKILL)  # grandchildren left in the group, if any
        return code

    def kill_now(self) -> None:
        """SIGKILL the group and reap the child, synchronously (for atexit and 2nd Ctrl-C)."""
        if self.running:
            self.killed = True
            _signal_group(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(5)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | int | None = None,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
) -> ManagedProcess:
    """Start ``argv`` in a new session with its output appended to ``log_path``.

    ``env`` is added to this process's environment (Python children get
    unbuffered output). ``user`` runs it as another user (root only).
    """
    if not argv:
        raise ValueError("argv must name a program")
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as output:
        try:
            popen = subprocess.Popen(  # noqa: S603  # argv is built by the demo, not a shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=cwd,
                user=user,
                start_new_session=True,
                preexec_fn=_SET_PDEATHSIG,  # prctl was resolved before the fork
                close_fds=True,
            )
        except OSError as exc:
            raise DemoProcessError(
                name,
                f"cannot start {name} ({argv[0]}): {exc.strerror or exc}",
                log_path=str(log_path),
            ) from exc
    log.debug("process_started", name=name, pid=popen.pid, log=str(log_path))
    return ManagedProcess(name, popen, log_path, stop_signal=stop_signal, stop_timeout=stop_timeout)


class Supervisor:
    """Owns the demo's children; ``async with`` stops them all on the way out.

    ``log_dir`` defaults to a new temporary directory (kept: the logs are
    what explains a failure; :attr:`log_dir` says where).
    """

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
        self.processes: list[ManagedProcess] = []
        self._closed = False

    async def __aenter__(self) -> Supervisor:
        atexit.register(self.kill_all_now)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop_all()
        except asyncio.CancelledError:
            # Cancelled while stopping (a second Ctrl-C): no more patience.
            self.kill_all_now()
            raise
        finally:
            atexit.unregister(self.kill_all_now)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | int | None = None,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> ManagedProcess:
        """Start a child named ``name`` (its log is ``<log_dir>/<name>.log``)."""
        if self._closed:
            raise RuntimeError("the supervisor has stopped its processes; start no more")
        if any(p.name == name and p.running for p in self.processes):
            raise ValueError(f"a process named {name!r} is already running")
        process = spawn(
            name,
            argv,
            self.log_dir / f"{_file_name(name)}.log",
            env=env,
            cwd=cwd,
            user=user,
            stop_signal=stop_signal,
            stop_timeout=stop_timeout,
        )
        self.processes.append(process)
        return process

    def get(self, name: str) -> ManagedProcess:
        """The newest child named ``name``."""
        for process in reversed(self.processes):
            if process.name == name:
                return process
        raise KeyError(name)

    async def stop_all(self) -> None:
        """Stop every child, newest first, each gracefully then by SIGKILL."""
        self._closed = True
        for process in reversed(self.processes):
            if process.running:
                code = await process.stop()
                log.debug("process_stopped", name=process.name, pid=process.pid, code=code)

    def kill_all_now(self) -> None:
        """SIGKILL every child that still runs (synchronous; safe from atexit)."""
        self._closed = True
        for process in reversed(self.processes):
            process.kill_now()


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "process"


@contextlib.asynccontextmanager
async def cancel_on_signals(
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP),
) -> AsyncIterator[list[int]]:
    """Cancel the current task on ``signals``, as asyncio does for SIGINT.

    Yields a list that receives the signals seen, so the caller can exit
    with 128 + signal.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("cancel_on_signals() must run inside a task")
    seen: list[int] = []

    def on_signal(signum: int) -> None:
        seen.append(signum)
        task.cancel()

    installed: list[int] = []
    for signum in signals:
        with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    try:
        yield seen
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
