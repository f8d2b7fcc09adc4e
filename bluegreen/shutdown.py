"""What SIGTERM/SIGINT do once ``serve`` has drained: cut the clean-up left, exit 1.

The first signal starts the drain and a second one during the drain cuts it
(both handled by the serve loops). After the drain, closing the control plane
(marking the replica stopped, releasing leadership) can still take a moment;
a signal then must not fall back to the default action — death by signal,
exit status -15 — but end the clean-up and exit 1, as documented.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Final

import structlog

log = structlog.get_logger("bluegreen.serve")

SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


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
