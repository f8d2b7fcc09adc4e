"""What the demo and zero-downtime tests share: ``bluegreen demo`` as a child process.

:func:`start_demo` runs ``python -m bluegreen demo ARGS`` with a
``DATABASE_URL`` and collects its stderr (progress lines) while it runs, so a
test can wait for a line with a deadline; :meth:`DemoRun.finish` returns the
exit code and stdout (the report).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

DEMO_TIMEOUT = 150.0  # one demo run, on a loaded 2-core machine


@dataclass
class DemoRun:
    """A running ``bluegreen demo``: its process and the stderr lines so far."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))

    def matching(self, pattern: str) -> re.Match[str] | None:
        """The first stderr line so far matching ``pattern``."""
        regex = re.compile(pattern)
        for line in self.lines:
            if match := regex.search(line):
                return match
        return None

    async def wait_line(self, pattern: str, within: float) -> re.Match[str]:
        """Wait for a stderr line matching ``pattern``; fails if the demo exits first."""
        deadline = time.monotonic() + within
        while (match := self.matching(pattern)) is None:
            if self.proc.returncode is not None and (self._reader is None or self._reader.done()):
                raise AssertionError(
                    f"demo exited ({self.proc.returncode}) before {pattern!r}:\n"
                    + "\n".join(self.lines[-30:])
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no line {pattern!r} after {within:g}s:\n" + "\n".join(self.lines[-30:])
                )
            await asyncio.sleep(0.05)
        return match

    async def finish(self, within: float = DEMO_TIMEOUT) -> tuple[int, str]:
        """Wait for the exit; (exit code, stdout)."""
        assert self.proc.stdout is not None
        try:
            stdout = await asyncio.wait_for(self.proc.stdout.read(), within)
            code = await asyncio.wait_for(self.proc.wait(), 30)
        finally:
            await self.close()
        return code, stdout.decode()

    async def close(self) -> None:
        """Kill the demo if it still runs (a failed test) and stop reading."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, 10)

    @property
    def stderr(self) -> str:
        """Everything printed on stderr so far."""
        return "\n".join(self.lines)


async def start_demo(*argv: str, database_url: str) -> DemoRun:
    """``python -m bluegreen demo ARGV`` on ``database_url`` (the demo makes its own database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_")}
    env["DATABASE_URL"] = database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", "demo", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    run = DemoRun(proc)
    run._reader = asyncio.create_task(run._read())
    return run


async def demo_json(*argv: str, database_url: str) -> tuple[int, dict[str, Any], str]:
    """Run ``bluegreen demo --output json ARGV`` to the end: (exit code, report, stderr)."""
    run = await start_demo("--output", "json", *argv, database_url=database_url)
    code, stdout = await run.finish()
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be one JSON object, got:\n{stdout}\n{run.stderr}"
    return code, json.loads(lines[0]), run.stderr


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def segments(report: dict[str, Any], phase: str) -> list[dict[str, Any]]:
    """The report's per-phase rows of ``phase``."""
    return [p for p in report["phases"] if p["phase"] == phase]


def colour_count(row: dict[str, Any], colour: str) -> int:
    """Requests of ``colour`` in one per-phase row."""
    return int(row["colours"].get(colour, {}).get("requests", 0))
