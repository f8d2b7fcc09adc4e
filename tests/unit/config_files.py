"""Config files for tests: write one, and check the error a bad one gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.config import load_config
from bluegreen.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    """``text`` as ``bluegreen.yaml`` in ``tmp_path``."""
    path = tmp_path / "bluegreen.yaml"
    path.write_text(text)
    return path


def assert_names_the_key(tmp_path: Path, yaml_text: str, key: str, problem: str) -> None:
    """Loading ``yaml_text`` fails at ``key`` with ``problem``, prefixed by file and key."""
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == key
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{path}: {key}: ")
