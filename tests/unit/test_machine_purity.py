"""The pure cores import no I/O library and read no clock or randomness."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import bluegreen

PURE_MODULES = (
    "bluegreen.controller.machine",
    "bluegreen.controller.conditions",
    "bluegreen.health.analysis",
    "bluegreen.health.probe_state",
)
FORBIDDEN_LOADED = ("aiohttp", "asyncpg", "asyncio")
FORBIDDEN_IMPORTS = {"asyncio", "aiohttp", "asyncpg", "time", "datetime", "random", "os", "socket"}


def test_importing_the_pure_cores_loads_no_io_library() -> None:
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in PURE_MODULES)
        + f"print(json.dumps([m for m in {list(FORBIDDEN_LOADED)!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_core_imports_no_clock_randomness_or_io(module: str) -> None:
    path = Path(bluegreen.__file__).parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint(FORBIDDEN_IMPORTS), imported & FORBIDDEN_IMPORTS
