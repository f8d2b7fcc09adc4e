"""Migration files: parsing, validation (every error names file:line), discovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.errors import MigrationFileError
from bluegreen.migrations.files import (
    MigrationFile,
    Phase,
    checksum_of,
    load_directory,
    parse_duration,
    parse_migration,
)

GOOD = """\
-- bluegreen:phase expand
-- bluegreen:lock-timeout 5s
-- bluegreen:statement-timeout 2min
-- bluegreen:up
ALTER TABLE orders ADD COLUMN status_code varchar(20);

-- bluegreen:down
ALTER TABLE orders DROP COLUMN status_code;
"""


def parse(text: str, name: str = "0001_add_status_code.sql") -> MigrationFile:
    return parse_migration(Path("migrations") / name, text)


def error_of(text: str, name: str = "0001_x.sql") -> str:
    with pytest.raises(MigrationFileError) as info:
        parse(text, name)
    return str(info.value)


def test_parses_header_sections_and_metadata() -> None:
    m = parse(GOOD)
    assert (m.version, m.name, m.label) == (1, "add_status_code", "0001_add_status_code")
    assert m.phase is Phase.EXPAND
    assert m.up.first_line == 5
    assert m.up.sql.strip() == "ALTER TABLE orders ADD COLUMN status_code varchar(20);"
    assert m.down is not None
    assert m.down.first_line == 8
    assert m.reversible
    assert m.lock_timeout == "5s"
    assert m.lock_timeout_seconds == 5.0
    assert m.statement_timeout_seconds == 120.0
    assert [d.name for d in m.header] == ["phase", "lock-timeout", "statement-timeout"]
    assert m.section("up") is m.up
    assert m.section("down") is m.down
    assert m.checksum == checksum_of(GOOD)


def test_section_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        parse(GOOD).section("sideways")


def test_no_down_section_is_irreversible() -> None:
    m = parse("-- bluegreen:phase contract\n-- bluegreen:up\nDROP TABLE old_orders;\n")
    assert m.down is None
    assert not m.reversible
    assert m.lock_timeout_seconds is None
    assert m.statement_timeout_seconds is None


def test_down_section_with_only_comments_is_reversible_with_nothing_to_run() -> None:
    m = parse(
        "-- bluegreen:phase migrate\n-- bluegreen:up\nUPDATE t SET a = b;\n"
        "-- bluegreen:down\n\n-- nothing to undo: the copy goes away\n--   with column a\n\n"
        "-- another paragraph\n"
    )
    assert m.down is not None
    assert m.reversible
    assert m.down.first_line == 5
    assert m.down.note == "nothing to undo: the copy goes away with column a"


def test_empty_down_section_is_an_error_that_names_both_ways_out() -> None:
    message = error_of(
        "-- bluegreen:phase expand\n-- bluegreen:up\nSELECT 1;\n-- bluegreen:down\n  \n"
    )
    assert message.startswith("migrations/0001_x.sql:4: the down section is empty")
    assert "'-- nothing to undo: ...'" in message
    assert "'-- bluegreen:irreversible <reason>'" in message


def test_comment_only_down_and_irreversible_contradict() -> None:
    message = error_of(
        "-- bluegreen:phase contract\n-- bluegreen:irreversible data is gone\n"
        "-- bluegreen:up\nDROP TABLE t;\n-- bluegreen:down\n-- nothing to undo\n"
    )
    assert message.startswith("migrations/0001_x.sql:2: marked irreversible but has a down")


def test_irreversible_with_reason() -> None:
    m = parse(
        "-- bluegreen:phase contract\n-- bluegreen:irreversible data is gone\n"
        "-- bluegreen:up\nDROP TABLE t;\n"
    )
    assert m.irreversible_reason == "data is gone"
    assert not m.reversible


def test_directive_names_are_case_insensitive_and_spacing_free() -> None:
    m = parse("--bluegreen:PHASE Migrate\n  --   bluegreen:Up\nSELECT 1;\n")
    assert m.phase is Phase.MIGRATE


def test_statement_directives_stay_in_the_section_text() -> None:
    m = parse(
        "-- bluegreen:phase migrate\n-- bluegreen:up\n"
        "-- bluegreen:backfill batch-size=500\nUPDATE t SET a = b WHERE a IS NULL;\n"
    )
    assert "-- bluegreen:backfill batch-size=500" in m.up.sql


def test_checksum_ignores_line_ending_style() -> None:
    assert checksum_of("a\r\nb\r\n") == checksum_of("a\nb\n") == checksum_of("a\rb\r")
    assert checksum_of("a\nb\n") != checksum_of("a\nb \n")


def test_crlf_file_parses_with_same_lines() -> None:
    m = parse(GOOD.replace("\n", "\r\n"))
    assert m.up.first_line == 5
    assert m.checksum == checksum_of(GOOD)


def test_timestamp_versions() -> None:
    m = parse(GOOD, "20240101120000_add_status_code.sql")
    assert m.version == 20240101120000


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("add_status.sql", GOOD, "add_status.sql:1: file name must be <version>_<name>.sql"),
        ("0001-add.sql", GOOD, "0001-add.sql:1: file name must be"),
        ("0000_first.sql", GOOD, "0000_first.sql:1: version 0 is reserved"),
        ("0001_x.sql", "", "0001_x.sql:1: no phase"),
        (
            "0001_x.sql",
            "SELECT 1;\n-- bluegreen:phase expand\n-- bluegreen:up\nSELECT 1;\n",
            "0001_x.sql:1: SQL before '-- bluegreen:up'",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- bluegreen:up now\nSELECT 1;\n",
            "0001_x.sql:2: '-- bluegreen:up' takes no arguments",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- bluegreen:up\nSELECT 1;\n-- bluegreen:up\nSELECT 2;\n",
            "0001_x.sql:4: second '-- bluegreen:up' section",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- bluegreen:up\nSELECT 1;\n-- bluegreen:down\n"
            "SELECT 2;\n-- bluegreen:down\nSELECT 3;\n",
            "0001_x.sql:6: second '-- bluegreen:down' section",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- bluegreen:down\nSELECT 1;\n-- bluegreen:up\nSELECT 2;\n",
            "0001_x.sql:2: '-- bluegreen:down' before '-- bluegreen:up'",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:up\nSELECT 1;\n-- bluegreen:phase expand\n",
            "0001_x.sql:3: '-- bluegreen:phase' belongs in the header",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- bluegreen:ignore rule why\n-- bluegreen:up\nSELECT 1;\n",
            "0001_x.sql:2: '-- bluegreen:ignore' must be inside the up or down section",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- bluegreen:up\n-- bluegreen:upp\nSELECT 1;\n",
            "0001_x.sql:3: unknown directive '-- bluegreen:upp'",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- bluegreen:phase contract\n-- bluegreen:up\nSELECT 1;\n",
            "0001_x.sql:2: '-- bluegreen:phase' given twice",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:up\nSELECT 1;\n",
            "0001_x.sql:1: no phase",
        ),
        (
            "0001_x.sql",
            "-- comment\n-- bluegreen:phase shrink\n-- bluegreen:up\nSELECT 1;\n",
            "0001_x.sql:2: unknown phase 'shrink'; use expand, migrate or contract",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- nothing else\n",
            "0001_x.sql:3: no '-- bluegreen:up' section",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- bluegreen:up\n-- just a comment\n\n-- bluegreen:down\n",
            "0001_x.sql:2: the up section is empty",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase contract\n-- bluegreen:irreversible drops data\n"
            "-- bluegreen:up\nDROP TABLE t;\n-- bluegreen:down\nCREATE TABLE t ();\n",
            "0001_x.sql:2: marked irreversible but has a down section",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase contract\n-- bluegreen:irreversible\n-- bluegreen:up\nSELECT 1;\n",
            "0001_x.sql:2: '-- bluegreen:irreversible' needs a reason",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n-- bluegreen:lock-timeout soon\n"
            "-- bluegreen:up\nSELECT 1;\n",
            "0001_x.sql:2: '-- bluegreen:lock-timeout' needs a duration like 5s",
        ),
        (
            "0001_x.sql",
            "-- bluegreen:phase expand\n\n-- bluegreen:statement-timeout\n"
            "-- bluegreen:up\nSELECT 1;\n",
            "0001_x.sql:3: '-- bluegreen:statement-timeout' needs a duration",
        ),
    ],
    ids=[
        "no-version",
        "dash-separator",
        "version-zero",
        "empty-file",
        "sql-before-up",
        "section-with-args",
        "two-up-sections",
        "two-down-sections",
        "down-before-up",
        "header-after-up",
        "statement-directive-in-header",
        "unknown-directive",
        "phase-twice",
        "no-phase",
        "unknown-phase",
        "no-up",
        "empty-up",
        "irreversible-with-down",
        "irreversible-without-reason",
        "bad-lock-timeout",
        "empty-statement-timeout",
    ],
)
def test_malformed_files_name_file_and_line(name: str, text: str, expected: str) -> None:
    message = error_of(text, name)
    assert message.startswith(str(Path("migrations") / name) + ":")
    assert expected in message


def test_error_carries_the_migration_label() -> None:
    with pytest.raises(MigrationFileError) as info:
        parse("-- bluegreen:up\nSELECT 1;\n", "0003_thing.sql")
    assert info.value.migration == "0003_thing"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(MigrationFileError, match=r"0001_gone\.sql:1: cannot read"):
        parse_migration(tmp_path / "0001_gone.sql")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "0001_latin1.sql"
    path.write_bytes("-- bluegreen:phase expand\n-- bluegreen:up\nSELECT 'é';\n".encode("latin-1"))
    with pytest.raises(MigrationFileError, match=r"0001_latin1\.sql:1: cannot read"):
        parse_migration(path)


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "0001_bom.sql"
    path.write_bytes(b"\xef\xbb\xbf-- bluegreen:phase expand\n-- bluegreen:up\nSELECT 1;\n")
    assert parse_migration(path).phase is Phase.EXPAND


def write(directory: Path, name: str, text: str = GOOD) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_directory_orders_by_number_not_text(tmp_path: Path) -> None:
    write(tmp_path, "10_ten.sql")
    write(tmp_path, "9_nine.sql")
    write(tmp_path, "0002_two.sql")
    (tmp_path / "README.md").write_text("not a migration")
    (tmp_path / "sub.sql").mkdir()
    assert [m.version for m in load_directory(tmp_path)] == [2, 9, 10]


def test_load_directory_rejects_duplicate_versions(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql")
    write(tmp_path, "1_b.sql")
    with pytest.raises(MigrationFileError, match=r"1_b\.sql:1: duplicate version 1 \(also 0001_a"):
        load_directory(tmp_path)


def test_load_directory_reports_a_bad_file(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql")
    write(tmp_path, "0002_b.sql", "-- bluegreen:phase expand\n-- bluegreen:up\n")
    with pytest.raises(MigrationFileError, match=r"0002_b\.sql:2: the up section is empty"):
        load_directory(tmp_path)


def test_load_directory_missing(tmp_path: Path) -> None:
    with pytest.raises(MigrationFileError, match="migrations directory not found"):
        load_directory(tmp_path / "nope")


def test_empty_directory_is_fine(tmp_path: Path) -> None:
    assert load_directory(tmp_path) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), ("5min", 300.0), ("5m", 300.0), ("1h", 3600.0), ("1.5", 1.5)],
    ids=["s", "ms", "min", "m", "h", "bare"],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1s", "2 days", "s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


def _backfill_doc_entries() -> dict[str, str]:
    """``name -> text`` of each argument in the files module's backfill argument list."""
    import bluegreen.migrations.files as files_module

    doc = files_module.__doc__ or ""
    block = doc.split("Backfill arguments", 1)[1].split("\n\n", 2)[1]
    entries: dict[str, str] = {}
    name = ""
    for line in block.splitlines():
        head = line.strip().split("=", 1)[0]
        if line.startswith("    ") and not line.startswith("     ") and "=" in line:
            name = head
            entries[name] = line
        elif name:
            entries[name] += " " + line.strip()
    return entries


def test_docstring_documents_every_backfill_argument_and_its_default() -> None:
    import re

    from bluegreen.migrations.backfill import _ARGUMENTS

    entries = _backfill_doc_entries()
    assert sorted(entries) == sorted(_ARGUMENTS)
    for name, help_text in _ARGUMENTS.items():
        default = re.search(r"\(default ([^);]+)\)", help_text)
        if default is not None:
            assert f"default {default.group(1)}" in entries[name], name
