"""The state store interface and what both backends share.

A store holds one :class:`~bluegreen.state.model.StateDocument`. Writers use
compare-and-set; readers on the hot path use :attr:`StateStore.current`,
which never awaits: the store pushes every newer version it observes (its own
writes included) to the callbacks registered with :meth:`StateStore.subscribe`,
in the event loop, in version order. Replicas report the version they have
applied with :meth:`StateStore.heartbeat`, so a writer can wait until every
live replica runs its change (:meth:`StateStore.wait_applied`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import structlog

from bluegreen.errors import StateConflictError, StateError
from bluegreen.state.leader import Leadership
from bluegreen.state.model import ReplicaInfo, ReplicaStatus, StateDocument

log = structlog.get_logger("bluegreen.state")

Subscriber = Callable[[StateDocument], None]
Clock = Callable[[], datetime]

DEFAULT_REPLICA_EXPIRY = 10.0
DEFAULT_DEAD_RETENTION = 300.0


def utc_now() -> datetime:
    """The wall clock, timezone-aware (the default ``clock`` of the stores)."""
    return datetime.now(UTC)


class StateStore(Protocol):
    """What the proxy, admin API and controller use; both backends implement it."""

    @property
    def location(self) -> str:
        """Where the state lives, safe to log (DSN passwords masked)."""
        ...

    @property
    def current(self) -> StateDocument:
        """The newest document observed; never awaits. Raises before :meth:`open`."""
        ...

    async def open(self) -> StateDocument:
        """Create the initial document if absent, read it and start watching."""
        ...

    async def read(self) -> StateDocument:
        """Read the document from the backend (publishing it if newer)."""
        ...

    async def compare_and_set(self, expected_version: int, new: StateDocument) -> StateDocument:
        """Store ``new`` as version ``expected_version + 1`` if the stored one is unchanged.

        Raises :class:`~bluegreen.errors.StateConflictError` otherwise.
        """
        ...

    async def update(
        self, change: Callable[[StateDocument], StateDocument], *, attempts: int = 5
    ) -> StateDocument:
        """Read, apply ``change``, compare-and-set; retry on conflict."""
        ...

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` for every newer version observed; returns unsubscribe."""
        ...

    async def heartbeat(self, replica: ReplicaInfo) -> None:
        """Record that ``replica`` is alive and which version it has applied."""
        ...

    async def replicas(self) -> list[ReplicaStatus]:
        """Live replicas, plus recently dead or stopped ones flagged ``alive=False``."""
        ...

    async def wait_applied(
        self,
        version: int,
        timeout: float,  # noqa: ASYNC109 - a deadline for all replicas, not for one await
        *,
        min_replicas: int = 1,
    ) -> bool:
        """True once every live replica (at least ``min_replicas``) applied ``version``."""
        ...

    async def acquire_leadership(self, name: str = "controller") -> Leadership | None:
        """Try (without blocking) to become leader for ``name``; ``None`` if another is."""
        ...

    async def close(self) -> None:
        """Stop watching, mark own replicas stopped, release leaderships."""
        ...


class BaseStateStore(abc.ABC):
    """Subscription, CAS loop and waiting, shared by the backends."""

    def __init__(
        self,
        *,
        location: str,
        actor: str,
        initial: StateDocument | None,
        replica_expiry: float,
        dead_retention: float,
        clock: Clock,
    ) -> None:
        if replica_expiry <= 0:
            raise ValueError(f"replica_expiry must be positive, got {replica_expiry}")
        self._location = location
        self.actor = actor
        self._initial = initial
        self.replica_expiry = replica_expiry
        self.dead_retention = max(dead_retention, replica_expiry)
        self._clock = clock
        self._current: StateDocument | None = None
        self._subscribers: list[Subscriber] = []
        self._replica_ids: set[str] = set()
        self._leaderships: list[Leadership] = []
        self._closed = False

    # ----------------------------------------------------------------- reading

    @property
    def location(self) -> str:
        """Where the state lives, safe to log (DSN passwords masked)."""
        return self._location

    @property
    def current(self) -> StateDocument:
        """The newest document observed; never awaits. Raises before :meth:`open`."""
        if self._current is None:
            raise StateError(f"state store {self._location} is not open; call open() first")
        return self._current

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(doc)`` in the loop for every newer version; returns unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _publish(self, doc: StateDocument) -> bool:
        """Adopt ``doc`` if it is newer than :attr:`current` and tell subscribers."""
        current = self._current
        if current is not None and doc.version <= current.version:
            # Versions only grow; an older read lost a race with a newer one.
            return False
        self._current = doc
        for callback in list(self._subscribers):
            try:
                callback(doc)
            except Exception:
                log.exception("state_subscriber_failed", store=self._location, version=doc.version)
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"state store {self._location} is closed")

    # ----------------------------------------------------------------- writing

    async def compare_and_set(self, expected_version: int, new: StateDocument) -> StateDocument:
        """Store ``new`` as version ``expected_version + 1`` if nobody wrote since.

        ``new`` must derive from the document at ``expected_version`` (its
        ``version`` field equals it); the stored copy gets the next version.
        Raises :class:`StateConflictError` (``expected``, ``found``) otherwise.
        """
        self._check_open()
        if new.version != expected_version:
            raise ValueError(
                f"new document has version {new.version} but expected_version is "
                f"{expected_version}; derive it from the document you compare against"
            )
        stored = await self._compare_and_set(expected_version, new)
        self._publish(stored)
        return stored

    async def update(
        self, change: Callable[[StateDocument], StateDocument], *, attempts: int = 5
    ) -> StateDocument:
        """Read, apply ``change``, compare-and-set; on conflict re-read and retry.

        ``change`` must be pure (it may run several times). If it returns the
        document it was given, nothing is written and that document is
        returned. After ``attempts`` conflicts the last
        :class:`StateConflictError` is raised.
        """
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        conflict: StateConflictError | None = None
        for attempt in range(attempts):
            if attempt:
                # Jittered backoff, so writers that collided do not collide again.
                await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.1)))
            doc = await self.read()
            new = change(doc)
            if new is doc:
                return doc
            try:
                return await self.compare_and_set(doc.version, new)
            except StateConflictError as exc:
                conflict = exc
        assert conflict is not None  # noqa: S101 - the loop ran at least once
        raise conflict

    # ----------------------------------------------------------------- replicas

    async def wait_applied(
        self,
        version: int,
        timeout: float,  # noqa: ASYNC109 - a deadline for all replicas, not for one await
        *,
        min_replicas: int = 1,
        interval: float = 0.05,
    ) -> bool:
        """True once every live replica reports ``applied_version >= version``.

        At least ``min_replicas`` must be alive (the default 1 keeps "nobody
        is running" from counting as "everyone applied it"). False when
        ``timeout`` seconds pass first.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            live = [status for status in await self.replicas() if status.alive]
            if len(live) >= min_replicas and all(
                status.info.applied_version >= version for status in live
            ):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(interval, remaining))

    async def heartbeat(self, replica: ReplicaInfo) -> None:
        """Record that ``replica`` is alive and which version it has applied."""
        self._check_open()
        await self._heartbeat(replica)
        self._replica_ids.add(replica.id)

    async def acquire_leadership(self, name: str = "controller") -> Leadership | None:
        """Try to become leader for ``name`` without blocking; ``None`` if another leads."""
        self._check_open()
        leadership = await self._acquire_leadership(name)
        if leadership is not None:
            self._leaderships.append(leadership)
            log.info("leadership_acquired", name=name, store=self._location, actor=self.actor)
        return leadership

    def _replica_status(
        self, info: ReplicaInfo, heartbeat_at: str, age: float, *, stopped: bool
    ) -> ReplicaStatus:
        """A replica's status: alive while it has not stopped and its heartbeat is fresh."""
        age = max(age, 0.0)  # a heartbeat "from the future": the clocks disagree a little
        return ReplicaStatus(
            info=info,
            heartbeat_at=heartbeat_at,
            age_seconds=age,
            alive=not stopped and age < self.replica_expiry,
            stopped=stopped,
        )

    async def _release_all(self) -> None:
        """On close: every leadership still held is lost, then released."""
        for leadership in self._leaderships:
            leadership._mark_lost("state store closed")
            try:
                await leadership.release()
            except Exception:
                log.exception("leadership_release_failed", name=leadership.name)
        self._leaderships.clear()

    # ----------------------------------------------------------------- backend

    @abc.abstractmethod
    async def open(self) -> StateDocument:
        """Create the initial document if absent, read it and start watching."""

    @abc.abstractmethod
    async def read(self) -> StateDocument:
        """Read the document from the backend (publishing it if newer)."""

    @abc.abstractmethod
    async def replicas(self) -> list[ReplicaStatus]:
        """Live replicas, plus recently dead or stopped ones flagged ``alive=False``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop watching, mark own replicas stopped, release leaderships."""

    @abc.abstractmethod
    async def _compare_and_set(self, expected_version: int, new: StateDocument) -> StateDocument:
        """Backend CAS: store ``new`` as ``expected_version + 1`` and return the stored copy."""

    @abc.abstractmethod
    async def _heartbeat(self, replica: ReplicaInfo) -> None:
        """Backend heartbeat write."""

    @abc.abstractmethod
    async def _acquire_leadership(self, name: str) -> Leadership | None:
        """Backend non-blocking lock attempt."""


async def run_heartbeats(
    store: StateStore,
    info: Callable[[], ReplicaInfo],
    *,
    interval: float = 2.0,
    wake: asyncio.Event | None = None,
) -> None:
    """Heartbeat ``info()`` every ``interval`` seconds and whenever ``wake`` is set.

    Runs until cancelled. A proxy sets ``wake`` right after applying a new
    version so ``wait_applied`` sees it at once. Store errors are logged, never
    raised: a database outage must not stop the proxy.
    """
    while True:
        try:
            await store.heartbeat(info())
        except StateError as exc:
            log.warning("state_heartbeat_failed", store=store.location, error=str(exc))
        if wake is None:
            await asyncio.sleep(interval)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
        wake.clear()


# --------------------------------------------------------------------------- DSN masking


def mask_dsn(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the user info and the query)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if k.lower() in ("password", "passfile") else v) for k, v in pairs],
                safe="*",
            )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        scheme = url.split(":", 1)[0] if ":" in url else ""
        return f"{scheme}://***" if scheme else "***"


def dsn_secrets(url: str) -> list[str]:
    """The password strings in ``url`` (raw and decoded), to scrub from messages."""
    secrets: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return secrets
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    if ":" in userinfo:
        raw = userinfo.split(":", 1)[1]
        secrets += [raw, unquote(raw)]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() == "password":
            secrets.append(value)
    return sorted({s for s in secrets if s}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
