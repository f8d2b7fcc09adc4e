"""data_plane_build: which build of the data plane this process runs."""

from __future__ import annotations

import sys
import types
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from bluegreen import runtime
from bluegreen.runtime import data_plane_build

BACKEND = Path(__file__).resolve().parents[2] / "build_backend"


def _fake_module(monkeypatch: pytest.MonkeyPatch, name: str, file: str) -> None:
    module = types.ModuleType(name)
    module.__file__ = file
    monkeypatch.setitem(sys.modules, name, module)


def test_this_test_run_imports_the_build_it_expects(expected_data_plane: str) -> None:
    assert data_plane_build() == expected_data_plane


def test_compiled_only_when_every_data_plane_module_is_an_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suffix = EXTENSION_SUFFIXES[0]
    monkeypatch.setattr(runtime, "COMPILED_MODULES", ("fake_dp_a", "fake_dp_b"))
    _fake_module(monkeypatch, "fake_dp_a", f"/site/fake_dp_a{suffix}")
    _fake_module(monkeypatch, "fake_dp_b", "/site/fake_dp_b.py")
    assert data_plane_build() == "interpreted"
    _fake_module(monkeypatch, "fake_dp_b", f"/site/fake_dp_b{suffix}")
    assert data_plane_build() == "compiled"


def test_runtime_names_the_modules_the_build_compiles() -> None:
    sys.path.insert(0, str(BACKEND))
    try:
        import bluegreen_build
    finally:
        sys.path.remove(str(BACKEND))
    as_names = tuple(
        p.removesuffix(".py").replace("/", ".") for p in bluegreen_build.COMPILED_MODULES
    )
    assert as_names == runtime.COMPILED_MODULES
