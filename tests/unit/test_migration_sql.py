"""Statement splitting with pglast: texts, lines, directives, syntax errors."""

from __future__ import annotations

import pytest

from bluegreen.errors import MigrationFileError
from bluegreen.migrations.sql import LineIndex, parse_statements


def texts(sql: str) -> list[str]:
    return [s.text for s in parse_statements(sql)]


def test_splits_statements_and_reports_their_lines() -> None:
    sql = "SELECT 1;\n\nCREATE TABLE t (a int);\n  INSERT INTO t\n  VALUES (1);\n"
    statements = parse_statements(sql, first_line=10)
    assert [(s.text, s.line) for s in statements] == [
        ("SELECT 1", 10),
        ("CREATE TABLE t (a int)", 12),
        ("INSERT INTO t\n  VALUES (1)", 13),
    ]
    assert [s.kind for s in statements] == ["SelectStmt", "CreateStmt", "InsertStmt"]


def test_last_statement_needs_no_semicolon() -> None:
    assert texts("SELECT 1; SELECT 2") == ["SELECT 1", "SELECT 2"]


def test_semicolons_in_strings_identifiers_and_comments_do_not_split() -> None:
    sql = (
        "INSERT INTO t VALUES ('a;b', E'c\\';d');\n"
        'SELECT 1 AS "x;y"; -- trailing; comment\n'
        "/* block ; comment */ SELECT 2;\n"
    )
    assert texts(sql) == [
        "INSERT INTO t VALUES ('a;b', E'c\\';d')",
        'SELECT 1 AS "x;y"',
        "SELECT 2",
    ]


def test_dollar_quoted_bodies_stay_whole() -> None:
    sql = """\
CREATE FUNCTION sync() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM $$ nested; $$;
  NEW.a := NEW.b; -- not a statement end
  RETURN NEW;
END
$fn$;
CREATE TRIGGER t BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION sync();
"""
    statements = parse_statements(sql, first_line=3)
    assert len(statements) == 2
    assert statements[0].text.endswith("$fn$")
    assert "NEW.a := NEW.b;" in statements[0].text
    assert statements[1].line == 10


def test_leading_comments_are_not_part_of_the_statement() -> None:
    sql = "-- first\n/* second */\n\nSELECT 1;\n-- between\nSELECT 2;\n"
    statements = parse_statements(sql)
    assert [(s.text, s.line) for s in statements] == [("SELECT 1", 4), ("SELECT 2", 6)]


def test_only_comments_gives_no_statements() -> None:
    assert parse_statements("-- nothing\n/* here */\n") == []
    assert parse_statements("") == []


def test_non_ascii_text_keeps_offsets_and_lines_right() -> None:
    sql = "-- café ☕\nINSERT INTO t VALUES ('ñandú 🐦');\n-- ü\nUPDATE t SET a = 'ß' WHERE b;\n"
    statements = parse_statements(sql, first_line=5)
    assert [(s.text, s.line) for s in statements] == [
        ("INSERT INTO t VALUES ('ñandú 🐦')", 6),
        ("UPDATE t SET a = 'ß' WHERE b", 8),
    ]


def test_directives_before_a_statement_attach_to_it() -> None:
    sql = (
        "SELECT 1;\n"
        "-- bluegreen:ignore ban-drop-column old code is gone\n"
        "-- a plain comment\n"
        "-- bluegreen:backfill batch-size=100\n"
        "UPDATE t SET a = b WHERE a IS NULL;\n"
    )
    first, second = parse_statements(sql, first_line=20)
    assert first.directives == ()
    assert [(d.name, d.args, d.line) for d in second.directives] == [
        ("ignore", "ban-drop-column old code is gone", 21),
        ("backfill", "batch-size=100", 23),
    ]
    directive = second.directive("backfill")
    assert directive is not None
    assert directive.args == "batch-size=100"
    assert second.directive("nope") is None


def test_trailing_directive_attaches_to_the_statement_ending_on_its_line() -> None:
    sql = "DROP INDEX i; -- bluegreen:ignore require-concurrent-index small table\nSELECT 2;\n"
    first, second = parse_statements(sql)
    assert [d.name for d in first.directives] == ["ignore"]
    assert second.directives == ()


def test_trailing_directive_on_the_last_statement() -> None:
    (only,) = parse_statements("SELECT 1; -- bluegreen:ignore rule reason\n")
    assert [d.args for d in only.directives] == ["rule reason"]


def test_directive_inside_a_multiline_statement_attaches_to_it() -> None:
    sql = "UPDATE t\n-- bluegreen:backfill key=id\nSET a = b;\nSELECT 1;\n"
    first, second = parse_statements(sql)
    assert [(d.name, d.line) for d in first.directives] == [("backfill", 2)]
    assert second.directives == ()


def test_directive_text_inside_strings_and_bodies_is_not_a_directive() -> None:
    sql = (
        "SELECT '-- bluegreen:ignore x y';\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\n"
        "-- bluegreen:backfill\n"
        "SELECT 1\n"
        "$$;\n"
    )
    assert all(s.directives == () for s in parse_statements(sql))


def test_directive_with_no_statement_after_it_is_an_error() -> None:
    sql = "SELECT 1;\n\n-- bluegreen:ignore some-rule why\n"
    with pytest.raises(
        MigrationFileError, match=r"^m\.sql:12: '-- bluegreen:ignore' is not followed"
    ):
        parse_statements(sql, first_line=10, source="m.sql")


def test_directive_in_an_empty_section_is_an_error() -> None:
    with pytest.raises(MigrationFileError, match=r"x\.sql:1: '-- bluegreen:backfill'"):
        parse_statements("-- bluegreen:backfill\n", source="x.sql")


@pytest.mark.parametrize(
    ("sql", "line"),
    [
        ("SELEC 1;", 7),
        ("SELECT 1;\n\nCREATE TABLE (a int);", 9),
        ("-- é ü ñ\nSELECT 'ok';\nALTER TABLE t ADD COLUMN;", 9),
        ("SELECT 1;\nSELECT $$ unterminated", 8),
    ],
    ids=["first-line", "third-line", "after-non-ascii", "unterminated-dollar"],
)
def test_syntax_errors_name_source_and_line(sql: str, line: int) -> None:
    with pytest.raises(MigrationFileError) as info:
        parse_statements(sql, first_line=7, source="migrations/0001_x.sql")
    message = str(info.value)
    assert message.startswith(f"migrations/0001_x.sql:{line}: SQL syntax error: ")


def test_line_index_agrees_with_counting_newlines() -> None:
    text = "a\n\nbc\r\nd\n" * 50 + "tail"
    index = LineIndex(text, first_line=7)
    for offset in range(len(text) + 1):
        assert index.line_of(offset) == 7 + text.count("\n", 0, offset), offset


def test_lines_and_directives_stay_exact_in_a_big_file() -> None:
    chunks = []
    for n in range(600):
        chunks.append(
            f"-- bluegreen:ignore ban-truncate reason {n}\n"
            f"-- a note about statement {n}\n"
            f"TRUNCATE t{n};  -- bluegreen:ignore ban-lock-table trailing {n}\n"
        )
    statements = parse_statements("".join(chunks), first_line=5)
    assert len(statements) == 600
    for n, stmt in enumerate(statements):
        assert stmt.line == 5 + 3 * n + 2
        assert [(d.args, d.line) for d in stmt.directives] == [
            (f"ban-truncate reason {n}", 5 + 3 * n),
            (f"ban-lock-table trailing {n}", 5 + 3 * n + 2),
        ]
