"""File backend: the state document in one JSON file, for a single host.

Files, next to ``PATH``:

- ``PATH`` — the document, always complete: it is written to ``.NAME.tmp`` in
  the same directory, fsynced, renamed over ``PATH`` with ``os.replace``
  (atomic on POSIX) and the directory is fsynced, so a ``kill -9`` or a power
  cut at any moment leaves either the old or the new document, never a torn
  or empty one.
- ``PATH.lock`` — ``flock``-ed during read-compare-write, which makes
  compare-and-set atomic across processes. Only the lock holder writes the
  temp file, so a fixed temp name is safe and a crash leaves at most one.
- ``PATH.replicas/ID.json`` — one heartbeat per replica, replaced atomically
  (no fsync: a heartbeat is worthless after a reboot anyway).
- ``PATH.leader.NAME.lock`` — ``flock``-ed by the leader for as long as it
  lives; the kernel drops the lock when the process dies.

Other processes' writes are noticed by polling ``stat`` (inode, size, mtime,
ctime) every ``poll_interval`` and re-reading on change, plus a full re-read
about once a second in case an inode number was reused within one timestamp
tick. Blocking calls (flock waits, fsync) run in a worker thread so the
event loop — which also runs the proxy — never stalls on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import structlog

from bluegreen.errors import InvalidFieldError, StateConflictError, StateError
from bluegreen.state.leader import Leadership
from bluegreen.state.model import (
    ReplicaInfo,
    ReplicaStatus,
    StateDocument,
    format_time,
    from_json,
    initial_document,
    parse_time,
    replica_info_from_dict,
    replica_info_to_dict,
    to_json,
)
from bluegreen.state.store import (
    DEFAULT_DEAD_RETENTION,
    DEFAULT_REPLICA_EXPIRY,
    BaseStateStore,
    Clock,
    utc_now,
)

log = structlog.get_logger("bluegreen.state")

_LEADER_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_FULL_READ_SECONDS: Final = 1.0
_STALE_TMP_SECONDS: Final = 60.0

_Signature = tuple[int, int, int, int, int] | None


class FileStateStore(BaseStateStore):
    """The state in a JSON file; see the module docstring for the layout."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        actor: str,
        initial: StateDocument | None = None,
        poll_interval: float = 0.1,
        replica_expiry: float = DEFAULT_REPLICA_EXPIRY,
        dead_retention: float = DEFAULT_DEAD_RETENTION,
        lock_timeout: float = 10.0,
        clock: Clock = utc_now,
    ) -> None:
        self.path = Path(path).absolute()
        super().__init__(
            location=f"file:{self.path}",
            actor=actor,
            initial=initial,
            replica_expiry=replica_expiry,
            dead_retention=dead_retention,
            clock=clock,
        )
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.poll_interval = poll_interval
        self.lock_timeout = lock_timeout
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._tmp_path = self.path.with_name(f".{self.path.name}.tmp")
        self._replicas_dir = self.path.with_name(self.path.name + ".replicas")
        self._watch_task: asyncio.Task[None] | None = None
        self._signature: _Signature = None
        self._last_problem: str | None = None

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> StateDocument:
        """Create the file with the initial document if absent; start polling."""
        self._check_open()
        if self._watch_task is not None:
            return self.current
        initial = self._initial or initial_document(actor=self.actor, now=self._clock())
        self._signature = self._stat()
        doc = await asyncio.to_thread(self._open_sync, initial)
        self._publish(doc)
        self._watch_task = asyncio.create_task(self._watch(), name=f"state-watch {self.path}")
        log.info("state_store_opened", store=self.location, version=doc.version)
        return doc

    async def close(self) -> None:
        """Stop polling, mark this process's replicas stopped, release leaderships."""
        if self._closed:
            return
        self._closed = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        for replica_id in sorted(self._replica_ids):
            try:
                await asyncio.to_thread(self._mark_stopped, replica_id)
            except OSError as exc:
                log.warning("state_replica_stop_failed", replica=replica_id, error=str(exc))
        await self._release_all()

    # ----------------------------------------------------------------- document

    async def read(self) -> StateDocument:
        """Read the file now (publishing the document if it is newer)."""
        self._check_open()
        doc = await asyncio.to_thread(self._read_required)
        self._publish(doc)
        return doc

    async def _compare_and_set(self, expected_version: int, new: StateDocument) -> StateDocument:
        return await asyncio.to_thread(self._cas_sync, expected_version, new)

    def _open_sync(self, initial: StateDocument) -> StateDocument:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_error("cannot create the state directory", exc) from exc
        with self._locked():
            with contextlib.suppress(FileNotFoundError):
                self._tmp_path.unlink()  # left by a writer killed mid-write; we hold the lock
            doc = self._read_file()
            if doc is None:
                doc = dataclasses.replace(initial, version=1)
                self._write_state(doc)
                log.info("state_created", store=self.location)
            return doc

    def _cas_sync(self, expected_version: int, new: StateDocument) -> StateDocument:
        with self._locked():
            found = self._read_required()
            if found.version != expected_version:
                raise StateConflictError(expected_version, found.version)
            stored = dataclasses.replace(new, version=expected_version + 1)
            self._write_state(stored)
            return stored

    def _read_required(self) -> StateDocument:
        doc = self._read_file()
        if doc is None:
            raise StateError(
                f"{self.path}: state file is missing (deleted after the store opened?). "
                "Restore it from a backup, or restart to create a fresh one"
            )
        return doc

    def _read_file(self) -> StateDocument | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._os_error("cannot read the state file", exc) from exc
        try:
            return from_json(data)
        except StateError as exc:
            raise StateError(
                f"{self.path}: {exc}. Fix or restore the file; bluegreen will not overwrite it"
            ) from None

    def _write_state(self, doc: StateDocument) -> None:
        data = (to_json(doc, indent=2) + "\n").encode()
        try:
            _write_atomic(self.path, self._tmp_path, data, durable=True)
        except OSError as exc:
            raise self._os_error("cannot write the state file", exc) from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive CAS lock; waits at most ``lock_timeout`` (in a worker thread)."""
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise self._os_error("cannot open the lock file", exc) from exc
            try:
                if _flock_until(fd, deadline) and _same_file(fd, self._lock_path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            if time.monotonic() >= deadline:
                raise StateError(
                    f"{self._lock_path}: held by another process for over "
                    f"{self.lock_timeout:g} s. Is a writer stuck? "
                    f"Check with `fuser {self._lock_path}`"
                )
        try:
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def _stat(self) -> _Signature:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    async def _watch(self) -> None:
        """Poll for other processes' writes; never raises (problems are logged once)."""
        full_every = max(1, round(_FULL_READ_SECONDS / self.poll_interval))
        polls = 0
        while True:
            await asyncio.sleep(self.poll_interval)
            polls += 1
            try:
                signature = self._stat()
                if signature != self._signature or polls % full_every == 0:
                    self._signature = signature  # taken before reading, so no change is missed
                    doc = await asyncio.to_thread(self._read_required)
                    self._publish(doc)
                for leadership in self._leaderships:
                    if isinstance(leadership, FileLeadership):
                        leadership.check()
                if self._last_problem is not None:
                    log.info("state_file_readable", store=self.location)
                    self._last_problem = None
            except Exception as exc:  # the watcher must survive anything
                problem = str(exc)
                if problem != self._last_problem:
                    log.warning("state_file_unreadable", store=self.location, error=problem)
                    self._last_problem = problem

    def _os_error(self, what: str, exc: OSError) -> StateError:
        reason = exc.strerror or type(exc).__name__
        where = exc.filename or self.path
        return StateError(
            f"{where}: {what}: {reason}. Check that the directory exists and is writable "
            "by this user"
        )

    # ----------------------------------------------------------------- replicas

    async def _heartbeat(self, replica: ReplicaInfo) -> None:
        body = {
            "info": replica_info_to_dict(replica),
            "heartbeat_at": format_time(self._clock()),
            "stopped": False,
        }
        try:
            await asyncio.to_thread(self._write_heartbeat, replica.id, body)
        except OSError as exc:
            raise self._os_error("cannot write the heartbeat", exc) from exc

    def _write_heartbeat(self, replica_id: str, body: dict[str, object]) -> None:
        self._replicas_dir.mkdir(exist_ok=True)
        target = self._replicas_dir / f"{replica_id}.json"
        # Unique temp name: heartbeats are written without the CAS lock.
        tmp = self._replicas_dir / f".{replica_id}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        _write_atomic(target, tmp, json.dumps(body).encode(), durable=False)

    def _mark_stopped(self, replica_id: str) -> None:
        target = self._replicas_dir / f"{replica_id}.json"
        try:
            body = json.loads(target.read_bytes())
        except (OSError, ValueError):
            return
        if isinstance(body, dict):
            body["stopped"] = True
            self._write_heartbeat(replica_id, body)

    async def replicas(self) -> list[ReplicaStatus]:
        """Replicas with a heartbeat file; ``alive`` if fresher than the expiry."""
        self._check_open()
        try:
            return await asyncio.to_thread(self._replicas_sync)
        except OSError as exc:
            raise self._os_error("cannot list heartbeats", exc) from exc

    def _replicas_sync(self) -> list[ReplicaStatus]:
        now = self._clock()
        statuses: list[ReplicaStatus] = []
        try:
            entries = list(os.scandir(self._replicas_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith("."):
                if entry.name.endswith(".tmp"):
                    _remove_if_older(entry, _STALE_TMP_SECONDS)
                continue
            if not entry.name.endswith(".json"):
                continue
            try:
                body = json.loads(Path(entry.path).read_bytes())
                info = replica_info_from_dict(body["info"])
                beat = parse_time(body["heartbeat_at"], "heartbeat_at")
                stopped = body["stopped"] is True
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, InvalidFieldError) as exc:
                log.warning("state_heartbeat_unreadable", file=entry.path, error=str(exc))
                continue
            age = (now - beat).total_seconds()
            if age > self.dead_retention:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                continue
            statuses.append(self._replica_status(info, body["heartbeat_at"], age, stopped=stopped))
        return sorted(statuses, key=lambda status: status.info.id)

    # ----------------------------------------------------------------- leadership

    async def _acquire_leadership(self, name: str) -> Leadership | None:
        if not _LEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid leadership name {name!r}; use lowercase letters, digits, -")
        lock_path = self.path.with_name(f"{self.path.name}.leader.{name}.lock")
        try:
            fd = await asyncio.to_thread(_try_flock, lock_path)
        except OSError as exc:
            raise self._os_error("cannot open the leader lock", exc) from exc
        if fd is None:
            return None
        note = f"pid={os.getpid()} actor={self.actor} since={format_time(self._clock())}\n"
        with contextlib.suppress(OSError):  # informational only: who leads, for operators
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        return FileLeadership(name, self.location, fd, lock_path)


class FileLeadership(Leadership):
    """An ``flock`` held on ``PATH.leader.NAME.lock`` by this process."""

    def __init__(self, name: str, location: str, fd: int, lock_path: Path) -> None:
        super().__init__(name, location)
        self._fd: int | None = fd
        self._lock_path = lock_path

    def check(self) -> None:
        """Mark the leadership lost if the lock file was removed or replaced."""
        if self._fd is None or not self.held:
            return
        try:
            same = _same_file(self._fd, self._lock_path)
        except OSError:
            same = False
        if not same:
            self._mark_lost(f"lock file {self._lock_path} was removed or replaced")

    async def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


# --------------------------------------------------------------------------- helpers


def _write_atomic(path: Path, tmp: Path, data: bytes, *, durable: bool) -> None:
    """Write ``data`` to ``tmp`` then rename it over ``path``; fsync both if ``durable``."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _flock_until(fd: int, deadline: float) -> bool:
    """Take an exclusive flock on ``fd``, retrying until ``deadline``; False on timeout."""
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _try_flock(path: Path) -> int | None:
    """Open ``path`` and take a non-blocking exclusive flock; the fd, or None if held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    if not _same_file(fd, path):  # replaced between open and flock: let the caller retry
        os.close(fd)
        return None
    return fd


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a lock on a stale inode is void)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _remove_if_older(entry: os.DirEntry[str], seconds: float) -> None:
    with contextlib.suppress(OSError):
        if time.time() - entry.stat().st_mtime > seconds:
            os.unlink(entry.path)
