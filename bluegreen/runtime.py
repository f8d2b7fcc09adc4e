"""How a serving process runs: its event loop and its garbage collector.

uvloop is used whenever it is installed (``pip install bluegreen[fast]``).

A serving process holds ~70k long-lived objects after start-up (aiohttp,
asyncpg, the controller, the config). A full (generation 2) collection walks
all of them: about 40 ms on a 2.5 GHz core, a stall every request in flight
waits for. :func:`freeze_startup_objects` moves them to the permanent
generation once the process is ready (as gunicorn's ``preload_app`` users
do), so later collections only walk what serving created.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is installed, else None (asyncio's default)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def freeze_startup_objects() -> None:
    """Collect once, then exempt every object alive now from future collections."""
    gc.collect()
    gc.freeze()
