"""The engine's API: plain SQL, migration files, facts across files, rendering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bluegreen.errors import MigrationFileError
from bluegreen.migrations.files import MigrationFile, Phase, parse_migration
from bluegreen.migrations.lint import (
    Finding,
    SchemaFacts,
    lint_migration,
    lint_migrations,
    lint_sql,
    lint_text,
    lock_for,
    section_locks,
)
from bluegreen.migrations.sql import parse_statements


def migration(version: int, phase: str, up: str, name: str = "step") -> MigrationFile:
    text = f"-- bluegreen:phase {phase}\n-- bluegreen:irreversible test\n-- bluegreen:up\n{up}\n"
    return parse_migration(Path(f"migrations/{version:04d}_{name}.sql"), text)


def test_finding_names_file_line_rule_lock_and_help() -> None:
    [finding] = lint_sql("SELECT 1;\n\nCREATE INDEX i ON users (email);\n", path="m/0007_x.sql")
    assert finding.rule_id == "require-concurrent-index"
    assert (finding.path, finding.line) == ("m/0007_x.sql", 3)
    assert finding.statement == "CREATE INDEX i ON users (email)"
    assert finding.lock == "SHARE"
    assert finding.blocks == "writes"
    assert not finding.rewrites
    assert '"users"' in finding.message
    assert "CREATE INDEX CONCURRENTLY i ON users (email)" in finding.help
    assert finding.headline().startswith(
        'm/0007_x.sql:3: require-concurrent-index: CREATE INDEX on "users" blocks writes'
    )


def test_finding_is_a_frozen_value_with_a_json_form() -> None:
    [finding] = lint_sql("VACUUM FULL t;")
    data = finding.to_dict()
    assert data["rule_id"] == "ban-vacuum-full"
    assert data["rewrites"] is True
    assert set(data) == {
        "rule_id", "path", "line", "statement", "message", "lock", "blocks", "rewrites",
        "why", "help",
    }  # fmt: skip
    with pytest.raises(AttributeError):
        finding.line = 2  # type: ignore[misc]
    assert isinstance(finding, Finding)


def test_first_line_offsets_lines() -> None:
    [finding] = lint_sql("DROP TABLE t;", path="f.sql", first_line=40)
    assert finding.line == 40


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(MigrationFileError, match=r"^f\.sql:2: SQL syntax error"):
        lint_sql("SELECT 1;\nALTER TABLE x ADD COLUMN;\n", path="f.sql")


def test_phase_argument_applies_phase_rules_to_plain_sql() -> None:
    assert lint_sql("ALTER TABLE t DROP COLUMN a;", phase=Phase.CONTRACT) == []
    assert [f.rule_id for f in lint_sql("ALTER TABLE t DROP COLUMN a;")] == ["ban-drop-column"]


def test_lint_migration_uses_the_up_section_and_its_phase() -> None:
    m = migration(3, "contract", "ALTER TABLE t DROP COLUMN a;\nCREATE INDEX i ON t (b);")
    findings = lint_migration(m)
    assert [(f.rule_id, f.line, f.path) for f in findings] == [
        ("require-concurrent-index", 5, str(m.path))
    ]


def test_transaction_control_in_a_migration_file() -> None:
    m = migration(4, "expand", "BEGIN;\nALTER TABLE t ADD COLUMN a int;\nCOMMIT;")
    assert {f.rule_id for f in lint_migration(m)} == {"ban-transaction-control-in-migration"}


def test_enum_value_use_in_a_migration_file_is_left_to_the_runner() -> None:
    # the runner commits ALTER TYPE ... ADD VALUE on its own when the value is used later
    m = migration(5, "expand", "ALTER TYPE s ADD VALUE 'x';\nUPDATE t SET s = 'x' WHERE id = 1;")
    assert {f.rule_id for f in lint_migration(m)} == {"ban-data-change-outside-migrate"}
    assert {
        f.rule_id
        for f in lint_sql("ALTER TYPE s ADD VALUE 'x';\nUPDATE t SET s = 'x' WHERE id = 1;")
    } == {"ban-enum-value-use-before-commit"}


def test_facts_carry_a_validated_check_to_a_later_migration() -> None:
    expand = migration(
        1, "expand", "ALTER TABLE users ADD CONSTRAINT nn CHECK (phone IS NOT NULL) NOT VALID;"
    )
    validate = migration(2, "migrate", "ALTER TABLE users VALIDATE CONSTRAINT nn;")
    contract = migration(3, "contract", "ALTER TABLE users ALTER COLUMN phone SET NOT NULL;")
    assert lint_migrations([contract, validate, expand]) == []
    # alone, the contract step cannot know the CHECK exists
    assert [f.rule_id for f in lint_migration(contract)] == ["require-check-for-set-not-null"]


def test_facts_carry_column_types_to_a_later_type_change() -> None:
    create = migration(1, "expand", "CREATE TABLE accounts (id bigint, country varchar(64));")
    narrow = migration(2, "expand", "ALTER TABLE accounts ALTER COLUMN country TYPE varchar(2);")
    widen = migration(3, "expand", "ALTER TABLE accounts ALTER COLUMN country TYPE varchar(100);")
    findings = lint_migrations([create, narrow])
    assert [(f.rule_id, Path(f.path).name) for f in findings] == [
        ("ban-rewriting-type-change", "0002_step.sql")
    ]
    assert "varchar(64) -> varchar(2)" in findings[0].message
    assert lint_migrations([create, widen]) == []


def reversible(version: int, phase: str, up: str, down: str) -> MigrationFile:
    text = f"-- bluegreen:phase {phase}\n-- bluegreen:up\n{up}\n-- bluegreen:down\n{down}\n"
    return parse_migration(Path(f"migrations/{version:04d}_step.sql"), text)


def test_section_locks_know_what_earlier_files_and_statements_established() -> None:
    create = migration(1, "expand", "CREATE TABLE t (c varchar(50), d int);")
    check = migration(
        2, "expand", "ALTER TABLE t ADD CONSTRAINT nn CHECK (d IS NOT NULL) NOT VALID;"
    )
    pending = migration(
        3,
        "contract",
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n"
        "ALTER TABLE t VALIDATE CONSTRAINT nn;\n"
        "ALTER TABLE t ALTER COLUMN d SET NOT NULL;",
    )
    statements = parse_statements(pending.up.sql)
    alone = [lock_for(s.node) for s in statements]
    # a statement alone: an unknown old type is taken as a widening; SET NOT NULL scans
    assert (alone[0].rewrites, alone[2].scans) == (False, True)

    locks = section_locks([pending, check, create], up=[3])
    assert list(locks) == [(3, "up")]
    narrow, validate, set_not_null = locks[(3, "up")]
    assert narrow.rewrites
    assert "varchar(50) -> varchar(20)" in narrow.note
    assert validate.mode == "SHARE UPDATE EXCLUSIVE"
    assert not set_not_null.scans
    assert set_not_null.note == "a validated CHECK proves it: no scan"


def test_section_locks_of_down_sections_follow_the_up_sections_they_undo() -> None:
    create = migration(1, "expand", "CREATE TABLE t (c varchar(20));")
    widen = reversible(
        2,
        "expand",
        "ALTER TABLE t ALTER COLUMN c TYPE text;",
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);",
    )
    later = reversible(3, "expand", "ALTER TABLE t ADD COLUMN e int;", "-- nothing to undo: test")
    locks = section_locks([create, widen, later], down=[3, 2])
    assert locks[(3, "down")] == []
    (narrow,) = locks[(2, "down")]
    assert narrow.rewrites  # text -> varchar(20): every row is checked
    assert widen.down is not None
    assert not lock_for(parse_statements(widen.down.sql)[0].node).rewrites  # alone: assumed


def test_section_locks_skip_unparsable_files_that_only_give_facts() -> None:
    broken = migration(1, "expand", "CREATE TABEL t;")  # the file parses, its SQL does not
    pending = migration(2, "expand", "CREATE INDEX i ON t (c);")
    (lock,) = section_locks([broken, pending], up=[2])[(2, "up")]
    assert lock.mode == "SHARE"
    with pytest.raises(MigrationFileError, match="SQL syntax error"):
        section_locks([broken, pending], up=[1, 2])


def test_tables_from_earlier_migrations_are_not_new() -> None:
    create = migration(1, "expand", "CREATE TABLE t (a int);")
    index = migration(2, "expand", "CREATE INDEX t_a ON t (a);")
    assert [f.rule_id for f in lint_migrations([create, index])] == ["require-concurrent-index"]


def test_only_reports_the_selected_versions() -> None:
    old = migration(1, "expand", "CREATE INDEX a ON t (a);")
    new = migration(2, "expand", "CREATE INDEX b ON t (b);")
    findings = lint_migrations([old, new], only={2})
    assert [f.line for f in findings] == [4]
    assert all(f.path.endswith("0002_step.sql") for f in findings)


def test_shared_facts_object_is_updated_in_place() -> None:
    facts = SchemaFacts()
    lint_sql("CREATE TABLE t (a varchar(10));", facts=facts)
    assert facts.column_type("t", "a") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ALTER TABLE t DROP COLUMN a;\n", {"ban-drop-column"}),
        ("-- bluegreen:phase contract\n-- bluegreen:up\nALTER TABLE t DROP COLUMN a;\n", set()),
        ("-- bluegreen:phase contract\nALTER TABLE t DROP COLUMN a;\n", set()),
        ("-- bluegreen:phase expand\nALTER TABLE t DROP COLUMN a;\n", {"ban-drop-column"}),
        (
            "-- bluegreen:phase expand\n-- bluegreen:up\nSELECT 1;\n-- bluegreen:down\n"
            "DROP TABLE t;\n",
            set(),  # the down section is not linted
        ),
    ],
    ids=["plain", "migration", "header without up", "expand header", "down not linted"],
)
def test_lint_text_detects_migration_files(text: str, expected: set[str]) -> None:
    assert {f.rule_id for f in lint_text(text, path="any_name.sql")} == expected


def test_lint_text_reports_the_real_path_of_an_oddly_named_migration() -> None:
    text = "-- bluegreen:phase expand\n-- bluegreen:up\nCREATE INDEX i ON t (a);\n"
    [finding] = lint_text(text, path="corpus/index.sql")
    assert (finding.path, finding.line) == ("corpus/index.sql", 3)


def test_lint_text_rejects_an_unknown_phase() -> None:
    with pytest.raises(MigrationFileError, match=r"^x\.sql:1: unknown phase 'deploy'"):
        lint_text("-- bluegreen:phase deploy\nSELECT 1;\n", path="x.sql")


def test_format_shows_statement_lock_why_help_and_docs() -> None:
    [finding] = lint_sql("ALTER TABLE users ALTER COLUMN id TYPE bigint;", path="m.sql")
    text = finding.format()
    lines = text.splitlines()
    assert lines[0] == (
        'm.sql:1: ban-rewriting-type-change: ALTER COLUMN "id" TYPE bigint on "users" rewrites '
        "the table (converting to bigint rewrites the table)"
    )
    assert lines[1] == "  statement: ALTER TABLE users ALTER COLUMN id TYPE bigint"
    assert (
        lines[2]
        == "  lock:      ACCESS EXCLUSIVE; blocks reads and writes while held; rewrites the table"
    )
    assert lines[3].startswith("  why:       ")
    assert any(line.startswith("  help:      ") for line in lines)
    assert lines[-1] == "  docs:      docs/rules/ban-rewriting-type-change.md"
    assert all(
        len(line) <= 100
        for line in lines
        if not line.startswith("m.sql") and "    " not in line[13:17]
    )


def test_engine_is_pure() -> None:
    code = (
        "import sys; import bluegreen.migrations.lint, bluegreen.migrations.lint.engine; "
        "print(sorted(m for m in ('asyncio', 'asyncpg', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "markers",
    [("-- +goose Up", "-- +goose Down"), ("-- +migrate Up", "-- +migrate Down"),
     ("-- migrate:up", "-- migrate:down")],
    ids=["goose", "sql-migrate", "dbmate"],
)  # fmt: skip
def test_down_sections_of_other_tools_are_not_linted(markers: tuple[str, str]) -> None:
    up, down = markers
    text = (
        f"{up}\nALTER TABLE users ALTER COLUMN name TYPE varchar(200);\nCREATE INDEX i ON t (a);\n"
        f"{down}\nALTER TABLE users ALTER COLUMN name TYPE varchar(100);\nDROP TABLE users;\n"
    )
    findings = lint_text(text, path="x.sql")
    assert [(f.rule_id, f.line) for f in findings] == [("require-concurrent-index", 3)]


def test_psql_meta_commands_are_not_sql() -> None:
    text = "\\set ON_ERROR_STOP on\n\\timing\nDROP TABLE t;\n"
    assert [(f.rule_id, f.line) for f in lint_text(text, path="x.sql")] == [("ban-drop-table", 3)]
