"""PEP 517 build backend: setuptools, plus mypyc for the data plane on request.

``BLUEGREEN_COMPILE=1 pip install .`` compiles :data:`COMPILED_MODULES` with
mypyc into C extensions (it needs a C compiler). For that build only, the
backend asks for mypy and for the packages the data plane imports, so mypyc
type-checks the code against the same libraries it runs with. Without the
variable the build is plain setuptools and installs pure Python.

An editable install cannot be compiled: the extensions would sit next to
the sources and shadow every later edit, so that combination is refused.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  # the rest of the PEP 517 interface, unchanged
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

# The per-request path: request parsing and forwarding, the upstream pool, header handling.
COMPILED_MODULES = ["bluegreen/proxy.py", "bluegreen/upstream.py", "bluegreen/http_head.py"]
COMPILE_ENV = "BLUEGREEN_COMPILE"
# pip takes the newest mypy this allows; CI builds with it on every run (mypy 2.4.1 when
# this was written; http_head.py avoids a slice bug of that version, see its _reason).
MYPYC_REQUIREMENT = "mypy>=1.10"
# Stubs for imports the compiled modules follow that ship no types of their own.
STUB_REQUIREMENTS = ["types-PyYAML"]


# True while setuptools runs setup.py only to ask what the build needs: mypy is
# not installed yet then, so setup.py must not compile.
_asking_requirements = False


def compiling_now() -> bool:
    """Whether setup.py should build the mypyc extensions in this run."""
    return compile_requested() and not _asking_requirements


def compile_requested() -> bool:
    """Whether BLUEGREEN_COMPILE asks for the compiled data plane ("1"; "0" or unset: no)."""
    value = os.environ.get(COMPILE_ENV, "").strip()
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise ValueError(f"{COMPILE_ENV} must be 1 (compile the data plane) or 0, got {value!r}")


def _runtime_requirements() -> list[str]:
    pyproject = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["fast"])


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' needs, plus mypy and the data plane's imports when compiling."""
    global _asking_requirements  # read by setup.py, which setuptools runs here
    _asking_requirements = True
    try:
        requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    finally:
        _asking_requirements = False
    if compile_requested():
        requires += [MYPYC_REQUIREMENT, *STUB_REQUIREMENTS, *_runtime_requirements()]
    return requires


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """Build the wheel (compiled when BLUEGREEN_COMPILE=1)."""
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' needs; refuses BLUEGREEN_COMPILE=1 (see the module docstring)."""
    _refuse_compiled_editable()
    return list(_setuptools.get_requires_for_build_editable(config_settings))


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """An editable (always pure-Python) install."""
    _refuse_compiled_editable()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)


def _refuse_compiled_editable() -> None:
    if compile_requested():
        raise RuntimeError(
            f"{COMPILE_ENV}=1 cannot be used with an editable install (pip install -e): "
            "compiled modules next to the sources would shadow every later edit. "
            f"Install without -e to compile, or unset {COMPILE_ENV}."
        )
