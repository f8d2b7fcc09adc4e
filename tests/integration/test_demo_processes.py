"""Child processes of the demo: readiness waits, stop escalation, cleanup on every exit path."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from bluegreen.demo import MIGRATIONS_DIR
from bluegreen.demo.app import start_app
from bluegreen.demo.processes import Supervisor, cancel_on_signals, free_port, python_argv
from bluegreen.errors import DemoProcessError
from bluegreen.migrations import runner

PY = sys.executable


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def script(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


SERVER = """
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a): pass
    s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    print("listening", flush=True)
    s.serve_forever()
"""


async def test_wait_http_returns_once_the_child_answers(tmp_path: Path) -> None:
    port = free_port()
    async with Supervisor(tmp_path) as procs:
        child = procs.start("web", [*script(SERVER), str(port)])
        assert await child.wait_http(f"http://127.0.0.1:{port}/", within=20) == 200
        await child.wait_port("127.0.0.1", port, within=5)
        match = await child.wait_output(r"^listening$", within=5)
        assert match.group(0) == "listening"
        assert child.returncode is None
    assert child.returncode == -signal.SIGTERM  # stopped on the way out


async def test_a_child_that_exits_early_fails_the_wait_with_its_log(tmp_path: Path) -> None:
    async with Supervisor(tmp_path) as procs:
        child = procs.start(
            "crash", script("print('bad config: port missing'); raise SystemExit(3)")
        )
        with pytest.raises(DemoProcessError) as caught:
            await child.wait_http(f"http://127.0.0.1:{free_port()}/", within=20)
    message = str(caught.value)
    assert "crash exited with code 3" in message
    assert "bad config: port missing" in message
    assert caught.value.name == "crash"
    assert caught.value.log_path == str(tmp_path / "crash.log")


async def test_a_wait_that_runs_out_says_what_it_last_saw(tmp_path: Path) -> None:
    async with Supervisor(tmp_path) as procs:
        child = procs.start("idle", script("import time; print('starting'); time.sleep(60)"))
        with pytest.raises(DemoProcessError, match=r"idle \(pid \d+\) not ready after 0.3s"):
            await child.wait_output("never printed", within=0.3)


async def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring", flush=True)
        time.sleep(60)
    """
    async with Supervisor(tmp_path) as procs:
        child = procs.start("stubborn", script(code), stop_timeout=0.3)
        await child.wait_output("ignoring", within=20)
        started = time.monotonic()
        assert await child.stop() == -signal.SIGKILL
        assert time.monotonic() - started < 5
        assert child.killed


async def test_stop_kills_grandchildren_left_in_the_group(tmp_path: Path) -> None:
    code = """
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("grandchild", p.pid, flush=True)
        time.sleep(60)
    """
    async with Supervisor(tmp_path) as procs:
        child = procs.start("parent", script(code))
        grandchild = int((await child.wait_output(r"grandchild (\d+)", within=20)).group(1))
        assert alive(grandchild)
    assert await gone(grandchild)


async def test_the_supervisor_stops_children_newest_first(tmp_path: Path) -> None:
    stamp = """
        import signal, sys, time
        def bye(*_):
            print("stopped", time.monotonic_ns(), flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("up", flush=True)
        time.sleep(60)
    """
    async with Supervisor(tmp_path) as procs:
        first = procs.start("db", script(stamp))
        second = procs.start("app", script(stamp))
        for child in (first, second):
            await child.wait_output("^up$", within=20)
    stopped = {
        p.name: int((await p.wait_output(r"stopped (\d+)", within=1)).group(1))
        for p in (first, second)
    }
    assert stopped["app"] < stopped["db"]
    assert first.returncode == second.returncode == 0


async def test_cancellation_stops_every_child(tmp_path: Path) -> None:
    started = asyncio.Event()
    pids: list[int] = []

    async def demo() -> None:
        async with Supervisor(tmp_path) as procs:
            for name in ("proxy", "blue"):
                child = procs.start(
                    name, script("import time; print('up', flush=True); time.sleep(60)")
                )
                await child.wait_output("up", within=20)
                pids.append(child.pid)
            started.set()
            await asyncio.Event().wait()  # the demo's work, until Ctrl-C

    task = asyncio.create_task(demo())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(not alive(pid) for pid in pids)


async def test_sigterm_to_the_demo_runs_the_same_cleanup(tmp_path: Path) -> None:
    code = f"""
        import asyncio, sys
        from pathlib import Path
        from bluegreen.demo.processes import Supervisor, cancel_on_signals
        from bluegreen.logs import configure_logging

        configure_logging()  # to stderr: stdout carries the pid
        SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]

        async def main():
            async with cancel_on_signals() as seen:
                try:
                    async with Supervisor(Path({str(tmp_path)!r})) as procs:
                        print(procs.start("sleeper", SLEEP).pid, flush=True)
                        await asyncio.Event().wait()
                except asyncio.CancelledError:
                    print("cancelled by", seen, flush=True)
                    return 143

        sys.exit(asyncio.run(main()))
    """
    demo = await asyncio.create_subprocess_exec(*script(code), stdout=asyncio.subprocess.PIPE)
    try:
        assert demo.stdout is not None
        child_pid = int(await asyncio.wait_for(demo.stdout.readline(), 30))
        demo.send_signal(signal.SIGTERM)
        out = (await asyncio.wait_for(demo.stdout.read(), 20)).decode()
        assert await demo.wait() == 143
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
    assert "cancelled by [<Signals.SIGTERM: 15>]" in out
    assert await gone(child_pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
async def test_children_die_with_a_demo_killed_by_sigkill(tmp_path: Path) -> None:
    code = f"""
        import sys, time
        from pathlib import Path
        from bluegreen.demo.processes import spawn
        from bluegreen.logs import configure_logging

        configure_logging()  # to stderr: stdout carries the pid
        child = spawn("orphan", [sys.executable, "-c", "import time; time.sleep(60)"],
                      Path({str(tmp_path / "orphan.log")!r}))
        print(child.pid, flush=True)
        time.sleep(60)
    """
    demo = await asyncio.create_subprocess_exec(*script(code), stdout=asyncio.subprocess.PIPE)
    try:
        assert demo.stdout is not None
        child_pid = int(await asyncio.wait_for(demo.stdout.readline(), 30))
        assert alive(child_pid)
    finally:
        demo.kill()
        await demo.wait()
    assert await gone(child_pid)


async def test_cancel_on_signals_needs_a_task() -> None:
    async with cancel_on_signals(()) as seen:
        assert seen == []


async def test_a_started_name_cannot_run_twice(tmp_path: Path) -> None:
    async with Supervisor(tmp_path) as procs:
        procs.start("blue", script("import time; time.sleep(60)"))
        with pytest.raises(ValueError, match="already running"):
            procs.start("blue", script("pass"))
        assert procs.get("blue").running
    with pytest.raises(RuntimeError, match="start no more"):
        procs.start("green", script("pass"))


async def until_in_flight(session: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        async with session.get(f"{base}/_demo/break") as response:
            if (await response.json())["in_flight"] > 0:
                return
        assert time.monotonic() < deadline, "the request never reached the app"
        await asyncio.sleep(0.01)


def test_python_argv_uses_this_interpreter() -> None:
    assert python_argv("bluegreen.demo.app", "--version", "v1") == [
        PY, "-m", "bluegreen.demo.app", "--version", "v1",
    ]  # fmt: skip


@pytest.mark.postgres
async def test_the_app_process_starts_serves_and_drains_on_sigterm(
    pg_dsn: str, tmp_path: Path
) -> None:
    await runner.apply(pg_dsn, MIGRATIONS_DIR, to=1)
    async with Supervisor(tmp_path) as procs:
        blue = await start_app(procs, "blue", "v1", pg_dsn)  # port 0: the app picks one
        app, base = blue.process, blue.url
        assert blue.port > 0
        await app.wait_http(f"{base}/health", within=30)
        async with aiohttp.ClientSession() as session:
            await session.post(f"{base}/_demo/break", json={"ratio": 0.0, "delay": 1.0})

            async def create() -> tuple[int, str]:
                order = {"customer": "c", "amount": 5}
                async with session.post(f"{base}/orders", json=order) as response:
                    return response.status, response.headers["X-App-Version"]

            pending = asyncio.create_task(create())
            # SIGTERM once the app is handling the request (inside the injected delay)
            await until_in_flight(session, base)
            app.send_signal(signal.SIGTERM)
            assert await pending == (201, "v1")
        assert await app.wait(within=15) == 0
    log = (tmp_path / "blue.log").read_text()
    assert '"event": "app_listening"' in log
    assert '"event": "app_stopped"' in log
    assert os.environ.get("DATABASE_URL") != pg_dsn  # passed to the child only
