"""``bluegreen migrate new``: the command line, the files it writes, the database lookup."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from bluegreen.cli import main
from bluegreen.cli.migrate_new_cmd import write_set
from bluegreen.errors import UsageError
from bluegreen.migrations import generators as g
from bluegreen.migrations.files import load_directory


def run(*argv: str) -> int:
    return main(["migrate", "new", *argv])


def sql(dsn: str, statement: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())


def test_rename_column_offline_writes_three_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "db"
    code = run(
        "rename-column", "orders", "status", "status_code", "--type", "varchar(20)",
        "--offline", "--dir", str(directory),
    )  # fmt: skip
    assert code == 0
    migrations = load_directory(directory)
    assert [m.phase.value for m in migrations] == ["expand", "migrate", "contract"]
    assert all(len(str(m.version)) == 14 for m in migrations)  # empty dir: UTC timestamps
    out = capsys.readouterr().out
    assert out.count("created ") == 3
    assert "Rollout:" in out
    assert "deploy the version that reads and writes status_code" in out


def test_versions_continue_the_directory_numbering(tmp_path: Path) -> None:
    (tmp_path / "0007_init.sql").write_text(
        "-- bluegreen:phase expand\n-- bluegreen:up\nCREATE TABLE t (id int);\n"
    )
    assert run("add-index", "t", "id", "--dir", str(tmp_path)) == 0
    assert run("backfill totals", "--phase", "migrate", "--dir", str(tmp_path)) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["0007_init.sql", "0008_index_t_id_idx.sql", "0009_backfill_totals.sql"]


def test_template_needs_a_phase(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("cleanup", "--dir", str(tmp_path))
    assert exit_info.value.code == 2
    assert "--phase" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_type_without_a_database_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert run("rename-column", "orders", "a", "b", "--dir", str(tmp_path)) == 2
    assert "pass --type" in capsys.readouterr().err
    assert not tmp_path.joinpath("migrations").exists()


def test_unreachable_database_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        "rename-column", "orders", "a", "b", "--dir", str(tmp_path),
        "--database-url", "postgresql://postgres@127.0.0.1:1/nowhere",
    )  # fmt: skip
    assert code == 1
    assert "cannot connect to the database to look up orders.a" in capsys.readouterr().err


def test_dry_run_json_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        "set-not-null", "users", "phone", "--default", "''", "--dry-run", "--output", "json",
        "--dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [f["phase"] for f in data["files"]] == ["expand", "migrate", "migrate", "contract"]
    assert "VALIDATE CONSTRAINT users_phone_not_null" in data["files"][2]["text"]
    assert list(tmp_path.iterdir()) == []


def test_json_output_lists_written_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("drop-column", "users", "legacy", "--output", "json", "--dir", str(tmp_path)) == 0
    data = json.loads(capsys.readouterr().out)
    (file,) = data["files"]
    assert file["phase"] == "contract"
    assert file["reversible"] is False
    assert Path(file["path"]).exists()


def test_bad_sql_arguments_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("set-not-null", "users; DROP TABLE x", "phone", "--dir", str(tmp_path)) == 2
    assert "is not valid SQL here" in capsys.readouterr().err


def test_write_set_refuses_to_overwrite_and_writes_all_or_nothing(tmp_path: Path) -> None:
    generated = g.generate(
        g.RenameColumn("orders", "a", "b", "text"),
        existing=[],
        now=datetime(2024, 1, 1, tzinfo=UTC),
    )
    clash = tmp_path / generated.files[2].name
    clash.write_text("mine")
    with pytest.raises(UsageError, match="already exists; not overwriting it"):
        write_set(tmp_path, generated)
    assert sorted(p.name for p in tmp_path.iterdir()) == [clash.name]
    assert clash.read_text() == "mine"


def test_write_set_refuses_a_version_in_use(tmp_path: Path) -> None:
    generated = g.generate(g.AddIndex("t", ("a",)), existing=["0001_x.sql"], now=datetime.now(UTC))
    (tmp_path / "0002_other.sql").write_text("mine")
    with pytest.raises(UsageError, match="already uses version 0002"):
        write_set(tmp_path, generated)


@pytest.mark.postgres
def test_rename_column_looks_the_column_up(
    pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(
        pg_dsn,
        """
        CREATE TABLE orders (id int PRIMARY KEY, status varchar(20) NOT NULL DEFAULT 'new');
        CREATE INDEX orders_status_idx ON orders (status);
        """,
    )
    code = run(
        "rename-column", "orders", "status", "state", "--database-url", pg_dsn,
        "--dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0
    expand, _backfill, _validate, contract = load_directory(tmp_path)
    text = expand.path.read_text()
    assert "ADD COLUMN state varchar(20);" in text
    assert "CHECK (state IS NOT NULL) NOT VALID" in text
    assert "index orders_status_idx uses status" in text
    assert "SET DEFAULT CAST('new' AS varchar)" in contract.path.read_text()
    capsys.readouterr()


@pytest.mark.postgres
def test_primary_key_columns_are_refused(
    pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(pg_dsn, "CREATE TABLE orders (id int PRIMARY KEY, n int)")
    code = run(
        "change-type", "orders", "id", "bigint", "--database-url", pg_dsn, "--dir", str(tmp_path)
    )
    assert code == 2
    assert "orders.id is part of the primary key" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_unknown_column_is_a_usage_error(
    pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(pg_dsn, "CREATE TABLE orders (id int PRIMARY KEY)")
    code = run(
        "rename-column", "orders", "nope", "b", "--database-url", pg_dsn, "--dir", str(tmp_path)
    )
    assert code == 2
    assert "orders has no column 'nope'" in capsys.readouterr().err
