"""SIGTERM/SIGINT for ``bluegreen serve``: drain on the first, cut on the second.

The first signal asks for a drain (stop accepting, finish what is in flight
for up to ``timeouts.drain``); a second one during the drain cuts what is
left and the process exits 1. After the drain, closing the control plane
(marking the replica stopped, releasing leadership) can still take a moment;
a signal then must not fall back to the default action — death by signal,
exit status -15 — but end the clean-up and exit 1 too
(:class:`CutAfterDrain`). Both serving modes, one process and a control
process with workers, use these.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Final

import structlog

log = structlog.get_logger("bluegreen.serve")

SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class DrainSignals:
    """The signals while serving: :meth:`first` waits for one, :meth:`drain` races the next."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._seen: list[int] = []
        self._event = asyncio.Event()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on."""
        for signum in SIGNALS:
            self._loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self._seen.append(signum)
        self._event.set()

    async def first(self) -> str:
        """Wait for the first signal; its name."""
        await self._event.wait()
        self._event.clear()
        return signal.Signals(self._seen[0]).name

    async def drain(
        self, drain: Awaitable[bool], cut: Callable[[], Awaitable[None]]
    ) -> bool | None:
        """Run ``drain`` unless another signal comes first: then cancel it, ``cut()``, None."""
        return await drain_unless_cut(drain, self._event.wait(), cut)


async def drain_unless_cut(
    drain: Awaitable[bool], cut_requested: Awaitable[object], cut: Callable[[], Awaitable[None]]
) -> bool | None:
    """``drain``'s result, unless ``cut_requested`` comes first: then cancel, ``cut()``, None."""
    draining = asyncio.ensure_future(drain)
    cutting = asyncio.ensure_future(cut_requested)
    await asyncio.wait({draining, cutting}, return_when=asyncio.FIRST_COMPLETED)
    if not draining.done():
        draining.cancel()
        await cut()
        return None
    cutting.cancel()
    return draining.result()


class CutAfterDrain:
    """Signal handlers that cancel the serving task; :attr:`fired` tells why it ended."""

    def __init__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("CutAfterDrain needs a running task")
        self._task = task
        self._loop = asyncio.get_running_loop()
        self.fired = False

    def arm(self) -> None:
        """From now on a signal cancels the task (replacing the serve loop's handlers)."""
        for signum in SIGNALS:
            self._loop.add_signal_handler(signum, self._cut, signum)

    def disarm(self) -> None:
        """Give the signals back to their default action."""
        for signum in SIGNALS:
            self._loop.remove_signal_handler(signum)

    def _cut(self, signum: int) -> None:
        if self.fired:
            return
        self.fired = True
        log.warning("shutdown_cut", signal=signal.Signals(signum).name)
        self._task.cancel()
