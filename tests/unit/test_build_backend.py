"""build_backend/bluegreen_build.py: BLUEGREEN_COMPILE asks for mypyc, and only for wheels."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.chdir(ROOT)  # setuptools runs setup.py from the project directory
    monkeypatch.syspath_prepend(str(ROOT / "build_backend"))
    import bluegreen_build

    yield bluegreen_build
    sys.modules.pop("bluegreen_build", None)


@pytest.mark.parametrize(
    ("value", "expected"), [("", False), ("0", False), ("1", True), (" 1 ", True)]
)
def test_compile_requested_reads_the_variable(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("BLUEGREEN_COMPILE", value)
    assert backend.compile_requested() is expected


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_an_unknown_value_is_refused_naming_the_variable(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("BLUEGREEN_COMPILE", value)
    with pytest.raises(ValueError, match=rf"BLUEGREEN_COMPILE must be 1 .* got '{value}'"):
        backend.compile_requested()


@pytest.mark.filterwarnings("ignore:Support for `\\[tool.setuptools\\]`")  # older setuptools
def test_a_compiled_wheel_asks_for_mypy_and_the_runtime_imports(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("setup.py compiled while only asked for requirements")

    # setuptools runs setup.py to answer; mypy is not installed at that point of a
    # real build. A stand-in mypyc fails the test if setup.py reaches for it.
    fake_build = ModuleType("mypyc.build")
    fake_build.mypycify = no_compiling  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mypyc", ModuleType("mypyc"))
    monkeypatch.setitem(sys.modules, "mypyc.build", fake_build)
    monkeypatch.delenv("BLUEGREEN_COMPILE", raising=False)
    plain = backend.get_requires_for_build_wheel()
    assert not any(r.startswith("mypy") for r in plain)
    monkeypatch.setenv("BLUEGREEN_COMPILE", "1")
    compiled = backend.get_requires_for_build_wheel()
    assert backend.MYPYC_REQUIREMENT in compiled
    assert {"httptools>=0.6", "uvloop>=0.19", "types-PyYAML"} <= set(compiled)
    assert backend.compiling_now()  # the real build that follows compiles


def test_an_editable_install_refuses_to_compile(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLUEGREEN_COMPILE", "1")
    with pytest.raises(RuntimeError, match=r"editable install .* shadow every later edit"):
        backend.get_requires_for_build_editable()
    with pytest.raises(RuntimeError, match="editable install"):
        backend.build_editable("unused-wheel-dir")
