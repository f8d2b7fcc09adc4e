"""The ``retries`` section: which answers of one colour are retried on the other."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.config import Config, load_config, parse_config
from bluegreen.demo.config import DemoServeSettings, write_serve_config
from tests.unit.config_files import assert_names_the_key, write

REPO = Path(__file__).resolve().parents[2]


def test_default_is_502_503_504() -> None:
    assert Config().retries.statuses == (502, 503, 504)
    assert parse_config({}).retries.statuses == (502, 503, 504)
    assert parse_config({"retries": None}).retries.statuses == (502, 503, 504)


def test_example_config_states_the_default() -> None:
    cfg = load_config(REPO / "config" / "bluegreen.yaml", env={})
    assert cfg.retries.statuses == (502, 503, 504)


@pytest.mark.parametrize(
    ("yaml_text", "statuses"),
    [
        ("retries: {statuses: [500, 503]}", (500, 503)),
        ("retries: {statuses: []}", ()),
        ("retries: {statuses: [599, 500]}", (599, 500)),
        ("retries: {statuses: ['${CODE}']}", (503,)),
    ],
    ids=["two", "off", "bounds", "from-env"],
)
def test_statuses_parse(tmp_path: Path, yaml_text: str, statuses: tuple[int, ...]) -> None:
    cfg = load_config(write(tmp_path, yaml_text), env={"CODE": "503"})
    assert cfg.retries.statuses == statuses


@pytest.mark.parametrize(
    ("yaml_text", "key", "problem"),
    [
        (
            "retries: {statuses: [502, 404]}",
            "retries.statuses[1]",
            "expected a status 500..599, got 404",
        ),
        ("retries: {statuses: [600]}", "retries.statuses[0]", "expected a status 500..599"),
        ("retries: {statuses: [true]}", "retries.statuses[0]", "expected a status 500..599"),
        ("retries: {statuses: [503.5]}", "retries.statuses[0]", "expected a status 500..599"),
        ("retries: {statuses: [soon]}", "retries.statuses[0]", "expected a status 500..599"),
        ("retries: {statuses: [503, 503]}", "retries.statuses[1]", "listed twice"),
        ("retries: {statuses: 503}", "retries.statuses", "expected a list of statuses"),
        ("retries: {statuses: null}", "retries.statuses", "expected a list of statuses"),
        ("retries: {status: [503]}", "retries.status", "unknown key"),
        ("retries: [503]", "retries", "expected a mapping"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_bad_values_name_the_key_path(
    tmp_path: Path, yaml_text: str, key: str, problem: str
) -> None:
    assert_names_the_key(tmp_path, yaml_text, key, problem)


def test_demo_retries_the_injected_500(tmp_path: Path) -> None:
    settings = DemoServeSettings(
        proxy_port=18080, blue="127.0.0.1:18001", green="127.0.0.1:18002", state_url="file:s.json"
    )
    path = write_serve_config(tmp_path / "demo.yaml", settings)
    cfg = load_config(path, env={"DATABASE_URL": "postgresql://demo@127.0.0.1/demo"})
    assert cfg.retries.statuses == (500, 502, 503, 504)
