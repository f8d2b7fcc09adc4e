"""``bluegreen migrate lint`` end to end: real files, the real command line, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bluegreen.cli import main

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "lint" / "cases"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_safe_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a.sql", "CREATE INDEX CONCURRENTLY i ON users (email);\n")
    assert main(["migrate", "lint", str(path)]) == 0
    assert capsys.readouterr().out == "no hazards (1 file checked)\n"


def test_hazard_exits_1_with_file_line_and_details(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "0007_expand.sql", "SELECT 1;\nCREATE INDEX i ON users (email);\n")
    assert main(["migrate", "lint", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        f'{path}:2: require-concurrent-index: CREATE INDEX on "users" blocks writes'
    )
    assert "  lock:      SHARE; blocks writes while held" in out
    assert "CREATE INDEX CONCURRENTLY i ON users (email);" in out
    assert out.rstrip().endswith("Docs: docs/rules/<rule-id>.md")


def test_json_output_is_one_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a.sql", "VACUUM FULL orders;\nDROP TABLE t;\n")
    assert main(["migrate", "lint", "--output", "json", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 1
    assert report["hazards"] == 2
    assert [f["rule_id"] for f in report["findings"]] == ["ban-vacuum-full", "ban-drop-table"]
    assert report["findings"][0]["rewrites"] is True
    assert report["errors"] == []


def test_syntax_error_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "broken.sql", "SELECT 1;\n\nALTER TABLE t ADD COLUMN;\n")
    assert main(["migrate", "lint", str(path)]) == 2
    assert f"{path}:3: SQL syntax error" in capsys.readouterr().err


def test_missing_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "lint", str(tmp_path / "nope.sql")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_unknown_phase_option_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.sql", "SELECT 1;\n")
    with pytest.raises(SystemExit) as exc:
        main(["migrate", "lint", "--phase", "deploy", str(path)])
    assert exc.value.code == 2


def test_phase_option_allows_a_drop_in_contract(tmp_path: Path) -> None:
    path = write(tmp_path, "a.sql", "ALTER TABLE t DROP COLUMN a;\n")
    assert main(["migrate", "lint", str(path)]) == 1
    assert main(["migrate", "lint", "--phase", "contract", str(path)]) == 0


def test_directory_lints_migrations_in_order_with_shared_facts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = [
        ("0010_check.sql", "expand", "ADD CONSTRAINT nn CHECK (phone IS NOT NULL) NOT VALID"),
        ("0011_validate.sql", "migrate", "VALIDATE CONSTRAINT nn"),
        ("0012_not_null.sql", "contract", "ALTER COLUMN phone SET NOT NULL"),
    ]
    for name, phase, change in steps:
        text = (
            f"-- bluegreen:phase {phase}\n-- bluegreen:irreversible test\n-- bluegreen:up\n"
            f"ALTER TABLE users {change};\n"
        )
        write(tmp_path, name, text)
    assert main(["migrate", "lint", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "no hazards (3 files checked)\n"


def test_rules_lists_every_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "lint", "--rules", "--output", "json"]) == 0
    rules = json.loads(capsys.readouterr().out)
    ids = {r["id"] for r in rules}
    assert {p.name for p in CASES.iterdir() if p.is_dir()} == ids


def test_console_script_runs(tmp_path: Path) -> None:
    path = write(tmp_path, "a.sql", "ALTER TABLE users RENAME COLUMN a TO b;\n")
    done = subprocess.run(
        [sys.executable, "-m", "bluegreen", "migrate", "lint", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "ban-rename-column" in done.stdout
