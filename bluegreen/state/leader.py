"""Leadership: which process runs the rollout controller.

A :class:`Leadership` is handed out by ``StateStore.acquire_leadership`` when
this process took the lock (an advisory lock on a dedicated PostgreSQL
session, or an ``flock`` on a sidecar file). The lock dies with the process
or the session, so a crashed leader never blocks the others for long.

The holder must watch :attr:`Leadership.lost`: once it is set (the session
was terminated, the lock file was replaced, the store closed) another
process may already lead, and the holder must stop acting as leader. Writes
stay safe in that window because every state write is a compare-and-set.
"""

from __future__ import annotations

import abc
import asyncio

import structlog

log = structlog.get_logger("bluegreen.state")


class Leadership(abc.ABC):
    """Proof that this process leads ``name`` until :meth:`release` or loss."""

    def __init__(self, name: str, location: str) -> None:
        self.name = name
        self.location = location
        self.lost = asyncio.Event()
        self._released = False

    @property
    def held(self) -> bool:
        """True until released or lost."""
        return not self._released and not self.lost.is_set()

    async def release(self) -> None:
        """Give the lock up so another process can lead; idempotent."""
        if self._released:
            return
        self._released = True
        await self._release()
        log.info("leadership_released", name=self.name, store=self.location)

    def _mark_lost(self, reason: str) -> None:
        """Record that the lock is gone for a reason other than :meth:`release`."""
        if self.lost.is_set() or self._released:
            return
        self.lost.set()
        log.warning("leadership_lost", name=self.name, store=self.location, reason=reason)

    @abc.abstractmethod
    async def _release(self) -> None:
        """Free the underlying lock."""
