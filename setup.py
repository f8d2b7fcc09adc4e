"""Build hook: compile the data plane with mypyc when BLUEGREEN_COMPILE=1.

Everything else about the package is declared in pyproject.toml. The
compiled modules are the same source files, turned into C extensions; they
are optional (the pure-Python modules are what an ordinary install runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).parent / "build_backend"))
from bluegreen_build import COMPILED_MODULES, compiling_now

ext_modules = []
if compiling_now():
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED_MODULES, opt_level="3")

setup(ext_modules=ext_modules)
