"""bench/busyloop.py and bench.stalls.measure as real processes: they run per CPU and see stalls."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import procs, stalls
from bench.busyloop import RECORD_THRESHOLD_S
from bench.procs import Supervisor


def test_a_stopped_probe_reports_the_stop_as_a_gap() -> None:
    probe = subprocess.Popen(
        [sys.executable, str(stalls.BUSY_LOOP_SCRIPT), "1.0"], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.3)  # the interpreter has started and is looping
        probe.send_signal(signal.SIGSTOP)
        time.sleep(0.15)  # the stall under test
        probe.send_signal(signal.SIGCONT)
        out, _ = probe.communicate(timeout=30)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    found = stalls.parse_probe_output(out, None)
    assert found.longest_s >= 0.14
    assert found.gaps_over_1ms >= 1
    assert 1.0 <= found.duration_s < 5.0


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_measure_runs_one_pinned_probe_per_cpu(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    with Supervisor(tmp_path) as sup:
        found = stalls.measure(sup, cpus, 0.3, timeout_s=30)
    assert [c.cpu for c in found] == cpus  # each pinned: parse_probe_output checks its CPUs
    for cpu in found:
        assert 0.3 <= cpu.duration_s < 5.0
        assert all(g > RECORD_THRESHOLD_S for g in cpu.gaps_s)
        assert (tmp_path / f"stall-probe-{cpu.cpu}.log").exists()


def _running_probes(seconds: str) -> list[int]:
    """PIDs of busy-loop probes started for ``seconds`` that are still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours = str(stalls.BUSY_LOOP_SCRIPT).encode() in argv and seconds.encode() in argv
        if ours and state != "Z":
            found.append(int(entry.name))
    return found


def test_measure_stops_a_probe_that_outlives_its_timeout(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.2 s"):
            stalls.measure(sup, None, 29.5, timeout_s=0.2)
        assert time.monotonic() - started < 10
        assert _running_probes("29.5") == []


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_failed_probe_stops_the_others(tmp_path: Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    with Supervisor(tmp_path) as sup:
        started = time.monotonic()
        # taskset refuses CPU 9999 at once; the probe on a real CPU would loop for 28.5 s.
        with pytest.raises(RuntimeError, match="the stall probe on CPU 9999 exited with 1"):
            stalls.measure(sup, [9999, cpu], 28.5, timeout_s=60)
        assert time.monotonic() - started < 10
        assert _running_probes("28.5") == []


def test_measure_leaves_nothing_for_the_supervisor_to_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signalled: list[int] = []
    with Supervisor(tmp_path) as sup:
        stalls.measure(sup, None, 0.05, timeout_s=30)
        # From here on, the supervisor's clean-up would signal the probes' old process ids.
        monkeypatch.setattr(procs, "_killpg", lambda pgid, sig: signalled.append(pgid))
    assert signalled == []


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_task_sharing_the_cpu_shows_as_time_behind_other_tasks() -> None:
    cpu = str(sorted(os.sched_getaffinity(0))[-1])
    hog = subprocess.Popen(
        ["taskset", "-c", cpu, sys.executable, "-c", "while True: pass"],
        stdin=subprocess.DEVNULL,
    )
    try:
        out = subprocess.run(
            ["taskset", "-c", cpu, sys.executable, str(stalls.BUSY_LOOP_SCRIPT), "0.5"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    finally:
        hog.kill()
        hog.wait()
    found = stalls.parse_probe_output(out, int(cpu))
    if found.behind_tasks_s is None:
        pytest.skip("this kernel does not report run delay (/proc/thread-self/schedstat)")
    # Two busy tasks on one CPU take turns: about half the time is gaps, nearly
    # all of them spent runnable behind the other task.
    assert found.lost_s > 0.1
    assert found.behind_tasks_s > 0.8 * found.lost_s
