"""How a serving process runs: its event loop, its build and its garbage collector.

uvloop is used whenever it is installed (``pip install bluegreen[fast]``).
``BLUEGREEN_COMPILE=1 pip install .`` compiles the data plane with mypyc
(build_backend/bluegreen_build.py); :func:`data_plane_build` tells which
build this process runs, and ``serve`` logs it.

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
import importlib
from collections.abc import Callable
from importlib.machinery import EXTENSION_SUFFIXES

# The modules BLUEGREEN_COMPILE=1 compiles (build_backend's COMPILED_MODULES, as module names).
COMPILED_MODULES = ("bluegreen.proxy", "bluegreen.upstream", "bluegreen.http_head")


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


def data_plane_build() -> str:
    """``compiled`` when every data-plane module is a mypyc extension, else ``interpreted``."""
    for name in COMPILED_MODULES:
        path = getattr(importlib.import_module(name), "__file__", None) or ""
        if not path.endswith(tuple(EXTENSION_SUFFIXES)):
            return "interpreted"
    return "compiled"
