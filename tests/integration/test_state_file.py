"""File state store against the real filesystem and real processes (flock, SIGKILL)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bluegreen.errors import StateConflictError, StateError
from bluegreen.state import open_store
from bluegreen.state.file import FileStateStore
from bluegreen.state.leader import Leadership
from bluegreen.state.model import (
    Flag,
    ReplicaInfo,
    StateDocument,
    format_time,
    from_json,
    initial_document,
    to_json,
    with_flag,
    with_weights,
)
from bluegreen.state.store import run_heartbeats

ROOT = Path(__file__).resolve().parents[2]


def now() -> datetime:
    return datetime.now(UTC)


def bump(doc: StateDocument) -> StateDocument:
    return with_weights(doc, doc.green_weight_bp + 1, "test", now())


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    """Poll ``check`` until true or fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


class Seen:
    """Records versions a store publishes; lets a test await one."""

    def __init__(self, store: FileStateStore) -> None:
        self.versions: list[int] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.unsubscribe = store.subscribe(self._on)

    def _on(self, doc: StateDocument) -> None:
        self.versions.append(doc.version)
        for version, fut in self._waiters:
            if doc.version >= version and not fut.done():
                fut.set_result(None)

    async def reached(self, version: int, within: float = 2.0) -> None:
        if self.versions and self.versions[-1] >= version:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((version, fut))
        await asyncio.wait_for(fut, within)


def held(lead: Leadership) -> bool:
    return lead.held  # a call, so the type checker does not pin the value between asserts


def read_doc(path: Path) -> StateDocument:
    return from_json(path.read_bytes())


def read_text(path: Path) -> str:
    return path.read_text()


def replace_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically, as a careful operator (or a restore) would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "bluegreen.json"


@pytest.fixture
async def stores(state_path: Path) -> AsyncIterator[list[FileStateStore]]:
    opened: list[FileStateStore] = []
    for name in ("a", "b"):
        store = FileStateStore(state_path, actor=name, poll_interval=0.02, replica_expiry=0.5)
        await store.open()
        opened.append(store)
    yield opened
    for store in opened:
        await store.close()


def replica(replica_id: str, applied: int) -> ReplicaInfo:
    return ReplicaInfo(
        id=replica_id,
        applied_version=applied,
        host="testhost",
        pid=os.getpid(),
        listen="127.0.0.1:0",
        started_at=format_time(now()),
    )


# --------------------------------------------------------------------------- document


async def test_open_creates_the_file_and_a_second_open_keeps_it(state_path: Path) -> None:
    initial = initial_document(actor="boot", now=now(), green_bp=0, salt="first")
    a = open_store(f"file:{state_path}", actor="a", initial=initial)
    doc = await a.open()
    assert doc.version == 1
    assert doc.salt == "first"
    assert read_doc(state_path) == doc
    await a.update(bump)
    b = open_store(str(state_path), actor="b", initial=initial_document(actor="b", now=now()))
    assert (await b.open()).version == 2
    await a.close()
    await b.close()


async def test_cas_conflict_one_wins_the_other_gets_expected_and_found(
    stores: list[FileStateStore],
) -> None:
    a, b = stores
    doc_a, doc_b = await a.read(), await b.read()
    assert doc_a.version == doc_b.version == 1
    won = await a.compare_and_set(1, with_weights(doc_a, 1000, "a", now()))
    assert won.version == 2
    with pytest.raises(StateConflictError) as info:
        await b.compare_and_set(1, with_weights(doc_b, 2000, "b", now()))
    assert (info.value.expected, info.value.found) == (1, 2)
    assert read_doc(a.path).green_weight_bp == 1000


async def test_cas_refuses_a_document_derived_from_another_version(
    stores: list[FileStateStore],
) -> None:
    a, _ = stores
    doc = await a.update(bump)
    with pytest.raises(ValueError, match="derive it from the document"):
        await a.compare_and_set(1, doc)


async def test_concurrent_updates_lose_nothing(stores: list[FileStateStore]) -> None:
    a, b = stores

    async def writer(store: FileStateStore) -> None:
        for _ in range(15):
            await store.update(bump, attempts=50)

    await asyncio.gather(writer(a), writer(b))
    final = await a.read()
    assert final.green_weight_bp == 30
    assert final.version == 31


async def test_update_skips_the_write_when_nothing_changes(stores: list[FileStateStore]) -> None:
    a, _ = stores
    before = a.path.stat()
    doc = await a.update(lambda d: d)
    assert doc.version == 1
    after = a.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


async def test_subscribers_see_own_writes_at_once_and_others_by_polling(
    stores: list[FileStateStore],
) -> None:
    a, b = stores
    seen_a, seen_b = Seen(a), Seen(b)
    doc = await a.update(bump)
    assert seen_a.versions == [2]  # own write: published before update() returns
    await seen_b.reached(2)
    doc = await b.update(lambda d: with_flag(d, Flag("beta", percent_bp=10), "b", now()))
    await seen_a.reached(doc.version)
    assert a.current.flags["beta"].percent_bp == 10
    assert seen_a.versions == [2, 3]
    seen_b.unsubscribe()
    await a.update(bump)
    await eventually(lambda: b.current.version == 4)
    assert seen_b.versions == [2, 3]


async def test_a_failing_subscriber_does_not_stop_the_others(
    stores: list[FileStateStore],
) -> None:
    a, _ = stores

    def broken(doc: StateDocument) -> None:
        raise RuntimeError("subscriber bug")

    a.subscribe(broken)
    seen = Seen(a)
    with capture_logs() as logs:
        await a.update(bump)
    assert seen.versions == [2]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["state_subscriber_failed"]


async def test_corrupt_file_is_refused_not_overwritten(state_path: Path) -> None:
    replace_file(state_path, '{"schema": 1, "version": ')
    store = FileStateStore(state_path, actor="t")
    with pytest.raises(StateError, match=r"not valid JSON.*will not overwrite"):
        await store.open()
    assert read_text(state_path) == '{"schema": 1, "version": '
    await store.close()


async def test_watcher_survives_a_corrupt_file_and_keeps_the_last_state(
    stores: list[FileStateStore],
) -> None:
    a, b = stores
    await a.update(bump)
    await eventually(lambda: b.current.version == 2)
    with capture_logs() as logs:
        replace_file(a.path, "not json")
        await eventually(lambda: any(e["event"] == "state_file_unreadable" for e in logs))
        assert b.current.version == 2
        good = with_weights(b.current, 4242, "fixer", now())
        replace_file(a.path, to_json(dataclasses.replace(good, version=3)))
        await eventually(lambda: b.current.version == 3)
    assert b.current.green_weight_bp == 4242
    # Logged once per watching store (a and b), not once per poll.
    assert sum(e["event"] == "state_file_unreadable" for e in logs) == 2


async def test_missing_directory_is_created_and_unwritable_one_is_a_state_error(
    tmp_path: Path,
) -> None:
    deep = FileStateStore(tmp_path / "x" / "y" / "s.json", actor="t")
    await deep.open()
    await deep.close()
    blocker = tmp_path / "file"
    replace_file(blocker, "")
    bad = FileStateStore(blocker / "s.json", actor="t")
    with pytest.raises(StateError, match="cannot create the state directory"):
        await bad.open()
    await bad.close()


# --------------------------------------------------------------------------- replicas


async def test_heartbeats_expiry_and_wait_applied(stores: list[FileStateStore]) -> None:
    a, b = stores
    doc = await a.update(bump)
    await a.heartbeat(replica("r1", doc.version))
    await b.heartbeat(replica("r2", doc.version - 1))
    statuses = await a.replicas()
    assert [(s.info.id, s.alive, s.info.applied_version) for s in statuses] == [
        ("r1", True, 2),
        ("r2", True, 1),
    ]
    assert not await a.wait_applied(doc.version, timeout=0.15)

    async def apply_later() -> None:
        await asyncio.sleep(0.05)
        await b.heartbeat(replica("r2", doc.version))

    task = asyncio.create_task(apply_later())
    assert await a.wait_applied(doc.version, timeout=2)
    await task
    # Neither beats again: both expire (replica_expiry=0.5 s) and stop counting.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while any(s.alive for s in await a.replicas()):
        assert loop.time() < deadline, "heartbeats did not expire"
        await asyncio.sleep(0.05)
    dead = await a.replicas()
    assert [(s.info.id, s.alive, s.stopped) for s in dead] == [
        ("r1", False, False),
        ("r2", False, False),
    ]
    assert all(s.age_seconds >= 0.5 for s in dead)
    # With nobody alive, "everyone applied it" is not claimed by default.
    assert not await a.wait_applied(1, timeout=0.05)
    assert await a.wait_applied(1, timeout=0.05, min_replicas=0)


async def test_close_marks_own_replicas_stopped(state_path: Path) -> None:
    a = FileStateStore(state_path, actor="a")
    b = FileStateStore(state_path, actor="b")
    await a.open()
    await b.open()
    await a.heartbeat(replica("proxy-a", 1))
    await b.heartbeat(replica("proxy-b", 1))
    await a.close()
    statuses = {s.info.id: s for s in await b.replicas()}
    assert (statuses["proxy-a"].alive, statuses["proxy-a"].stopped) == (False, True)
    assert statuses["proxy-b"].alive
    await b.close()


async def test_old_heartbeats_are_forgotten(state_path: Path) -> None:
    clock_now = [datetime(2024, 1, 1, tzinfo=UTC)]
    store = FileStateStore(
        state_path, actor="t", replica_expiry=10, dead_retention=60, clock=lambda: clock_now[0]
    )
    await store.open()
    await store.heartbeat(replica("old", 1))
    clock_now[0] += timedelta(seconds=30)
    assert [(s.info.id, s.alive) for s in await store.replicas()] == [("old", False)]
    clock_now[0] += timedelta(seconds=31)
    assert await store.replicas() == []
    assert not (state_path.parent / (state_path.name + ".replicas") / "old.json").exists()
    await store.close()


async def test_run_heartbeats_beats_on_wake(stores: list[FileStateStore]) -> None:
    a, _ = stores
    applied = [1]
    wake = asyncio.Event()
    task = asyncio.create_task(
        run_heartbeats(a, lambda: replica("p", applied[0]), interval=30, wake=wake)
    )
    try:
        assert await a.wait_applied(1, timeout=2)
        doc = await a.update(bump)
        applied[0] = doc.version
        wake.set()
        assert await a.wait_applied(doc.version, timeout=2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --------------------------------------------------------------------------- leadership


async def test_leadership_is_exclusive_and_passes_on_release(
    stores: list[FileStateStore],
) -> None:
    a, b = stores
    lead = await a.acquire_leadership()
    assert lead is not None
    assert held(lead)
    assert await b.acquire_leadership() is None
    assert await a.acquire_leadership() is None  # not re-entrant either
    assert await b.acquire_leadership("other") is not None  # names are independent
    await lead.release()
    assert not held(lead)  # released, which is not "lost"
    assert not lead.lost.is_set()
    second = await b.acquire_leadership()
    assert second is not None
    await b.close()
    assert second.lost.is_set()  # closing the store ends its leaderships
    third = await a.acquire_leadership()
    assert third is not None


async def test_leadership_is_lost_when_its_lock_file_is_replaced(
    stores: list[FileStateStore],
) -> None:
    a, _ = stores
    lead = await a.acquire_leadership("controller")
    assert lead is not None
    lock = a.path.with_name(a.path.name + ".leader.controller.lock")
    assert f"pid={os.getpid()}" in read_text(lock)
    os.unlink(lock)
    await asyncio.wait_for(lead.lost.wait(), 2)


_HOLDER = """
import asyncio, sys
import structlog
from bluegreen.state.file import FileStateStore
from bluegreen.state.leader import Leadership

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is ours

async def main():
    store = FileStateStore(sys.argv[1], actor="holder")
    await store.open()
    lead = await store.acquire_leadership("controller")
    print("leader" if lead else "follower", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_leadership_passes_when_the_leader_process_is_killed(state_path: Path) -> None:
    store = FileStateStore(state_path, actor="follower")
    await store.open()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, str(state_path), stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"leader"
        assert await store.acquire_leadership("controller") is None
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        lead = await store.acquire_leadership("controller")
        assert lead is not None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.close()


# --------------------------------------------------------------------------- kill -9


# A fork server: imports once, then forks one writer per "go" line. Each writer
# updates the state as fast as it can (a growing history and a padding of
# varying length, so a torn file would show) and prints its pid after its first
# write. "reap" waits for that writer and prints how it died.
_FORKER = """
import asyncio, os, sys
from datetime import UTC, datetime
import structlog
from bluegreen.state.file import FileStateStore
from bluegreen.state.leader import Leadership
from bluegreen.state.model import with_rollout, with_weights

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is ours

path = sys.argv[1]

def writer():
    async def run():
        store = FileStateStore(path, actor="writer", poll_interval=60)
        await store.open()
        i = 0
        while True:
            i += 1
            def change(doc, i=i):
                t = datetime.now(UTC)
                doc = with_weights(doc, (doc.green_weight_bp + 1) % 10001, "writer", t)
                record = {"pid": os.getpid(), "i": i, "pad": "x" * (i * 37 % 3000)}
                return with_rollout(doc, record, "writer", t)
            await store.update(change)
            if i == 1:
                os.write(1, b"%d\\n" % os.getpid())
    asyncio.run(run())

child = None
for line in sys.stdin:
    if line.strip() == "go":
        child = os.fork()
        if child == 0:
            try:
                writer()
            finally:
                os._exit(3)
    else:
        _, status = os.waitpid(child, 0)
        print("signal", os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)
"""


def test_kill_9_of_a_writer_never_leaves_a_torn_file(state_path: Path) -> None:
    state_path.parent.mkdir(parents=True)
    rng = random.Random(20240501)  # reproducible kill timings
    forker = subprocess.Popen(
        [sys.executable, "-c", _FORKER, str(state_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert forker.stdin is not None
    assert forker.stdout is not None
    last_version = 0
    mid_write = 0
    try:
        for _ in range(50):
            forker.stdin.write("go\n")
            forker.stdin.flush()
            pid = int(forker.stdout.readline())
            # Fault injection, not synchronisation: kill at a random point in the writes.
            time.sleep(rng.uniform(0, 0.03))
            os.kill(pid, signal.SIGKILL)
            forker.stdin.write("reap\n")
            forker.stdin.flush()
            assert forker.stdout.readline().split() == ["signal", str(signal.SIGKILL)]
            mid_write += state_path.with_name(f".{state_path.name}.tmp").exists()
            doc = from_json(state_path.read_bytes())  # never torn, never empty
            assert doc.version >= last_version + 1  # every writer wrote at least once
            last_version = doc.version
    finally:
        forker.kill()
        forker.wait()
        forker.stdin.close()
        forker.stdout.close()
    print(f"kill -9 loop: 50 kills, final version {last_version}, {mid_write} hit mid-write")

    async def reopen() -> StateDocument:
        store = FileStateStore(state_path, actor="after")
        doc = await store.open()
        doc = await store.update(bump)
        await store.close()
        return doc

    assert asyncio.run(reopen()).version == last_version + 1
    assert not state_path.with_name(f".{state_path.name}.tmp").exists()  # cleaned on open


async def test_heartbeat_file_content_is_json(stores: list[FileStateStore]) -> None:
    a, _ = stores
    await a.heartbeat(replica("r1", 1))
    body = json.loads(read_text(a.path.parent / (a.path.name + ".replicas") / "r1.json"))
    assert body["info"]["id"] == "r1"
    assert body["stopped"] is False
