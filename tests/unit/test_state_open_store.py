"""open_store: which backend a URL names, and that passwords never leak into messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.errors import ConfigError
from bluegreen.state import open_store
from bluegreen.state.file import FileStateStore
from bluegreen.state.postgres import PostgresStateStore
from bluegreen.state.store import dsn_secrets, mask_dsn, scrub


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("file:/var/lib/bluegreen/state.json", "/var/lib/bluegreen/state.json"),
        ("file:///var/lib/bluegreen/state.json", "/var/lib/bluegreen/state.json"),
        ("/var/lib/bluegreen/state.json", "/var/lib/bluegreen/state.json"),
        ("state.json", str(Path("state.json").absolute())),
        ("file:state/bg.json", str(Path("state/bg.json").absolute())),
        ("./a:b.json", str(Path("a:b.json").absolute())),
    ],
    ids=["file-colon", "file-url", "absolute", "relative", "file-relative", "colon-in-path"],
)
def test_file_forms(url: str, path: str) -> None:
    store = open_store(url, actor="t")
    assert isinstance(store, FileStateStore)
    assert str(store.path) == path
    assert store.location == f"file:{path}"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bg@db.internal:5432/bluegreen",
        "postgres://bg@db/bluegreen",
        "POSTGRESQL://bg@db/bluegreen",
    ],
)
def test_postgres_forms(url: str) -> None:
    assert isinstance(open_store(url, actor="t"), PostgresStateStore)


def test_options_reach_the_backend() -> None:
    store = open_store("file:/tmp/x.json", actor="t", poll_interval=0.01, replica_expiry=2)
    assert isinstance(store, FileStateStore)
    assert (store.poll_interval, store.replica_expiry) == (0.01, 2)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "redis://user:hunter2@cache:6379/0",
        "mysql:whatever",
        "file://host/path.json",
        "file:",
    ],
    ids=["empty", "blank", "redis", "other-scheme", "file-host", "file-nothing"],
)
def test_anything_else_is_a_config_error_naming_the_forms(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url, actor="t")
    message = str(info.value)
    assert info.value.key == "state"
    assert "hunter2" not in message
    assert "file:PATH" in message or "absolute path" in message


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://bg:s3cr%40t@db:5432/app", "postgresql://bg:***@db:5432/app"),
        ("postgresql://bg@db/app", "postgresql://bg@db/app"),
        (
            "postgresql://db/app?password=s3cret&sslmode=require",
            "postgresql://db/app?password=***&sslmode=require",
        ),
        ("postgresql://u:p@[::1]:5432/app", "postgresql://u:***@[::1]:5432/app"),
    ],
    ids=["userinfo", "no-password", "query", "ipv6"],
)
def test_mask_dsn(url: str, masked: str) -> None:
    assert mask_dsn(url) == masked


def test_postgres_location_is_masked() -> None:
    store = open_store("postgresql://bg:topsecret@db/app", actor="t")
    assert "topsecret" not in store.location


def test_scrub_removes_raw_and_decoded_passwords() -> None:
    secrets = dsn_secrets("postgresql://bg:s3cr%40t@db/app?password=other")
    assert scrub("auth s3cr@t / s3cr%40t / other failed", secrets) == "auth *** / *** / *** failed"
