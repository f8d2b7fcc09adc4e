"""Generated migration sets: files, phases, down sections, parseable, lint-clean."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bluegreen.errors import UsageError
from bluegreen.migrations import generators as g
from bluegreen.migrations.files import Phase, parse_migration
from bluegreen.migrations.lint.engine import lint_migrations, lint_sql
from bluegreen.migrations.sql import parse_statements

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

REQUESTS: dict[str, g.Request] = {
    "rename": g.RenameColumn("orders", "status", "status_code", "varchar(20)"),
    "rename-not-null-default": g.RenameColumn(
        "orders", "status", "status_code", "varchar(20)", not_null=True, default="'pending'"
    ),
    "change-type": g.ChangeType("orders", "amount", "bigint", "integer"),
    "change-type-restore": g.ChangeType(
        "orders", "amount", "bigint", "integer", not_null=True, restore_name=True
    ),
    "change-type-using": g.ChangeType(
        "orders",
        "code",
        "integer",
        "text",
        using="NULLIF(trim(code), '')::integer",
        reverse_using="code_integer::text",
    ),
    "set-not-null": g.SetNotNull("users", "phone"),
    "set-not-null-default": g.SetNotNull("users", "phone", default="''"),
    "add-index": g.AddIndex("users", ("email",)),
    "add-index-unique-partial": g.AddIndex(
        "users", ("lower(email)", "created_at DESC"), unique=True, where="deleted_at IS NULL"
    ),
    "drop-column": g.DropColumn("users", "legacy"),
    "drop-column-typed": g.DropColumn("users", "legacy", type="text"),
    "template": g.Template("backfill totals", Phase.MIGRATE),
}

# (phases in order, reversible flags)
EXPECTED: dict[str, tuple[list[Phase], list[bool]]] = {
    "rename": ([Phase.EXPAND, Phase.MIGRATE, Phase.CONTRACT], [True, True, True]),
    "rename-not-null-default": (
        [Phase.EXPAND, Phase.MIGRATE, Phase.MIGRATE, Phase.CONTRACT],
        [True] * 4,
    ),
    "change-type": ([Phase.EXPAND, Phase.MIGRATE, Phase.CONTRACT], [True] * 3),
    "change-type-restore": (
        [Phase.EXPAND, Phase.MIGRATE, Phase.MIGRATE, Phase.CONTRACT] * 2,
        [True] * 8,
    ),
    "change-type-using": ([Phase.EXPAND, Phase.MIGRATE, Phase.CONTRACT], [True] * 3),
    "set-not-null": ([Phase.EXPAND, Phase.MIGRATE, Phase.CONTRACT], [True] * 3),
    "set-not-null-default": (
        [Phase.EXPAND, Phase.MIGRATE, Phase.MIGRATE, Phase.CONTRACT],
        [True] * 4,
    ),
    "add-index": ([Phase.EXPAND], [True]),
    "add-index-unique-partial": ([Phase.EXPAND], [True]),
    "drop-column": ([Phase.CONTRACT], [False]),
    "drop-column-typed": ([Phase.CONTRACT], [True]),
    "template": ([Phase.MIGRATE], [False]),
}

RUNNABLE = [k for k in REQUESTS if k != "template"]


def generate(key: str, existing: list[str] | None = None) -> g.GeneratedSet:
    return g.generate(REQUESTS[key], existing=existing or ["0006_init.sql"], now=NOW)


@pytest.mark.parametrize("key", list(REQUESTS), ids=list(REQUESTS))
def test_phases_and_reversibility(key: str) -> None:
    result = generate(key)
    phases, reversible = EXPECTED[key]
    assert [f.phase for f in result.files] == phases
    assert [f.reversible for f in result.files] == reversible
    assert result.steps


@pytest.mark.parametrize("key", RUNNABLE, ids=RUNNABLE)
def test_files_parse_with_their_phase_and_numbering(key: str) -> None:
    result = generate(key)
    for offset, file in enumerate(result.files, start=7):
        assert file.name.startswith(f"{offset:04d}_")
        migration = parse_migration(Path("migrations") / file.name, file.text)
        assert migration.phase is file.phase
        assert migration.reversible is file.reversible
        assert parse_statements(migration.up.sql, first_line=migration.up.first_line)
        if migration.down is not None:
            statements = parse_statements(migration.down.sql, first_line=migration.down.first_line)
            assert statements or migration.down.note.startswith("nothing to undo: ")
        else:
            assert migration.irreversible_reason


@pytest.mark.parametrize("key", RUNNABLE, ids=RUNNABLE)
def test_sets_lint_clean_up_and_down(key: str) -> None:
    result = generate(key)
    migrations = [parse_migration(Path("m") / f.name, f.text) for f in result.files]
    assert lint_migrations(migrations) == []
    for migration in migrations:
        if migration.down is not None:
            found = lint_sql(
                migration.down.sql,
                path=f"{migration.path}#down",
                first_line=migration.down.first_line,
                phase=migration.phase,
            )
            assert found == []


def test_template_stays_unrunnable_until_filled() -> None:
    (file,) = generate("template").files
    assert file.name == "0007_backfill_totals.sql"
    with pytest.raises(Exception, match="up section is empty"):
        parse_migration(Path("m") / file.name, file.text)


def test_template_is_irreversible_until_a_down_is_written() -> None:
    # A placeholder down with only comments would read as "nothing to undo": a
    # forgotten down must make 'migrate down' refuse, not silently undo nothing.
    (file,) = generate("template").files
    filled = file.text.replace(
        "-- Write the SQL here; the up section must not stay empty.", "SELECT 1;"
    )
    migration = parse_migration(Path("m") / file.name, filled)
    assert migration.down is None
    assert not migration.reversible
    assert "'-- nothing to undo: ...'" in file.text


@pytest.mark.parametrize(
    ("key", "indexes", "reason"),
    [
        ("rename-not-null-default", [1], "the copied values go away with status_code when 0007_"),
        ("rename-not-null-default", [2], "the constraint goes away with status_code when 0007_"),
        ("set-not-null-default", [1], "which rows were NULL is not recorded"),
        ("set-not-null-default", [2], "the constraint is dropped by the down of 0007_"),
    ],
    ids=["rename-backfill", "rename-validate", "not-null-backfill", "not-null-validate"],
)
def test_steps_with_nothing_to_undo_have_a_comment_only_down(
    key: str, indexes: list[int], reason: str
) -> None:
    files = generate(key).files
    for index in indexes:
        migration = parse_migration(Path("m") / files[index].name, files[index].text)
        assert migration.down is not None
        assert parse_statements(migration.down.sql) == []
        assert migration.down.note.startswith(f"nothing to undo: {reason}")
        assert migration.reversible


def test_rename_sets_backfill_directive_and_idempotent_where() -> None:
    files = generate("rename").files
    migrate = parse_migration(Path("m") / files[1].name, files[1].text)
    (stmt,) = parse_statements(migrate.up.sql)
    directive = stmt.directive("backfill")
    assert directive is not None
    assert directive.args == "batch-size=1000"
    assert stmt.text.startswith("UPDATE orders SET status_code = status")
    assert "WHERE status_code IS NULL AND status IS NOT NULL" in stmt.text


def test_rename_trigger_is_before_row_and_dropped_in_contract() -> None:
    files = generate("rename").files
    assert "BEFORE INSERT OR UPDATE ON orders" in files[0].text
    assert "FOR EACH ROW EXECUTE FUNCTION bluegreen_sync_orders_status_status_code()" in (
        files[0].text
    )
    contract = parse_migration(Path("m") / files[2].name, files[2].text)
    kinds = [s.kind for s in parse_statements(contract.up.sql)]
    assert kinds == ["DropStmt", "DropStmt", "AlterTableStmt"]
    assert "ALTER TABLE orders DROP COLUMN status;" in contract.up.sql


def test_rename_contract_with_not_null_sets_default_and_not_null_before_drop() -> None:
    files = generate("rename-not-null-default").files
    up = parse_migration(Path("m") / files[3].name, files[3].text).up.sql
    order = [
        # first: its scan (after a down and re-apply) must not run under DROP TRIGGER's
        # ACCESS EXCLUSIVE lock, held until the commit
        "VALIDATE CONSTRAINT orders_status_code_not_null",
        "DROP TRIGGER",
        "SET DEFAULT 'pending'",
        "SET NOT NULL",
        "DROP CONSTRAINT IF EXISTS orders_status_code_not_null",
        "DROP COLUMN status;",
    ]
    positions = [up.index(part) for part in order]
    assert positions == sorted(positions)
    expand = files[0].text
    assert "CHECK (status_code IS NOT NULL) NOT VALID" in expand


def test_set_not_null_phases_hold_the_right_statements() -> None:
    files = generate("set-not-null-default").files
    ups = [parse_migration(Path("m") / f.name, f.text).up.sql for f in files]
    assert "SET DEFAULT ''" in ups[0]
    assert "CHECK (phone IS NOT NULL) NOT VALID" in ups[0]
    assert "-- bluegreen:backfill" in ups[1]
    assert "UPDATE users SET phone = '' WHERE phone IS NULL;" in ups[1]
    assert ups[2].strip() == "ALTER TABLE users VALIDATE CONSTRAINT users_phone_not_null;"
    assert "ALTER COLUMN phone SET NOT NULL" in ups[3]
    assert "DROP CONSTRAINT users_phone_not_null" in ups[3]
    assert "every running version of the app writes a non-NULL phone" in files[0].text


def test_add_index_is_concurrent_with_concurrent_down() -> None:
    (file,) = generate("add-index-unique-partial").files
    migration = parse_migration(Path("m") / file.name, file.text)
    assert migration.up.sql.strip() == (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_expr_created_at_key ON users "
        "((lower(email)), created_at DESC) WHERE deleted_at IS NULL;"
    )
    assert migration.down is not None
    assert "DROP INDEX CONCURRENTLY IF EXISTS users_expr_created_at_key;" in migration.down.sql


def test_drop_column_without_type_is_irreversible_with_grace_period_note() -> None:
    (file,) = generate("drop-column").files
    migration = parse_migration(Path("m") / file.name, file.text)
    assert migration.irreversible_reason is not None
    assert "--type" in migration.irreversible_reason
    assert "Grace period first" in file.text


def test_change_type_uses_casts_both_ways() -> None:
    files = generate("change-type").files
    assert "ADD COLUMN amount_bigint bigint;" in files[0].text
    assert "NEW.amount_bigint := (CAST(new.amount AS bigint));" in files[0].text
    assert "NEW.amount := (CAST(new.amount_bigint AS integer));" in files[0].text
    assert "UPDATE orders SET amount_bigint = CAST(amount AS bigint)" in files[1].text


def test_change_type_using_expressions_are_qualified_in_the_trigger() -> None:
    files = generate("change-type-using").files
    assert "NEW.code_integer := (CAST(NULLIF(pg_catalog.btrim(new.code), '') AS integer));" in (
        files[0].text
    )
    assert "NEW.code := (CAST(new.code_integer AS text));" in files[0].text
    assert "SET code_integer = CAST(NULLIF(pg_catalog.btrim(code), '') AS integer)" in (
        files[1].text
    )


def test_change_type_restore_name_renames_back() -> None:
    files = generate("change-type-restore").files
    assert "ADD COLUMN amount bigint;" in files[4].text
    assert "ALTER TABLE orders DROP COLUMN amount_bigint;" in files[7].text
    names = [f.name for f in files]
    # the second round's comments point at the second round's own files
    assert names[5] in files[4].text
    assert names[1] not in files[4].text


def test_quoting_of_awkward_names() -> None:
    request = g.RenameColumn('app."Order Items"', '"User"', '"select"', "text")
    files = g.generate(request, existing=[], now=NOW).files
    assert 'ALTER TABLE app."Order Items" ADD COLUMN "select" text;' in files[0].text
    assert 'NEW."select" := NEW."User";' in files[0].text
    assert "CREATE OR REPLACE FUNCTION app.bluegreen_sync_Order" not in files[0].text
    assert 'app."bluegreen_sync_Order Items_User_select"()' in files[0].text
    for file in files:
        parse_migration(Path("m") / file.name, file.text)
    assert files[0].name == "20240501120000_rename_order_items_user_to_select_expand.sql"


def test_long_names_are_limited_to_63_bytes() -> None:
    table, column = "t" * 60, "c" * 60
    files = g.generate(
        g.RenameColumn(table, column, column + "x", "int"), existing=[], now=NOW
    ).files
    function = g.limit_name(f"bluegreen_sync_{table}_{column}_{column}x")
    assert len(function.encode()) == 63
    assert f"FUNCTION {function}()" in files[0].text
    assert g.limit_name("short") == "short"


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], ["20240501120000", "20240501120001"]),
        (["0001_a.sql", "0012_b.sql", "notes.txt"], ["0013", "0014"]),
        (["1_a.sql", "2_b.sql"], ["3", "4"]),
        (["20240101000000_a.sql"], ["20240501120000", "20240501120001"]),
        (["20240501120000_a.sql"], ["20240501120001", "20240501120002"]),
        (["20300101000059_future.sql"], ["20300101000100", "20300101000101"]),
        (["0003_a.sql", "20240101000000_b.sql"], ["20240501120000", "20240501120001"]),
    ],
    ids=["empty", "sequence", "no-padding", "timestamps", "same-second", "future", "mixed"],
)
def test_next_versions(existing: list[str], expected: list[str]) -> None:
    assert g.next_versions(existing, 2, NOW) == expected


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (g.RenameColumn("orders", "a", "a", "int"), "the new column name is the old one"),
        (g.RenameColumn("orders o", "a", "b", "int"), "is not a table name"),
        (g.RenameColumn("orders", "a.b", "c", "int"), "is not a column name"),
        (g.RenameColumn("orders", "a", "b", "not a type"), "is not valid SQL here"),
        (g.RenameColumn("orders", "a", "b", "int) + (1"), "is not a type"),
        (g.RenameColumn("orders", "a", "b", "int; DROP TABLE x"), "is not valid SQL here"),
        (g.SetNotNull("users", "phone", default="pending"), "refers to a column"),
        (g.SetNotNull("users", "phone", batch_size=0), "--batch-size"),
        (
            g.ChangeType("t", "c", "int", "text", using="(SELECT 1)"),
            "subqueries are not allowed",
        ),
        (g.ChangeType("t", "c", "int", "text", using="t.c::int"), "bare name"),
        (g.AddIndex("users", ()), "at least one column"),
        (g.AddIndex("users", ("a, b",)), "not one column or expression"),
    ],
    ids=[
        "same-name",
        "table-alias",
        "qualified-column",
        "bad-type",
        "not-a-type",
        "injection",
        "default-column",
        "batch-size",
        "using-subquery",
        "using-qualified",
        "index-no-columns",
        "index-two-in-one",
    ],
)
def test_bad_requests_are_usage_errors(request_: g.Request, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        g.generate(request_, existing=[], now=NOW)


def test_quote_ident_matches_postgres_rules() -> None:
    assert g.quote_ident("orders") == "orders"
    assert g.quote_ident("status") == "status"
    assert g.quote_ident("name") == "name"  # unreserved keyword
    assert g.quote_ident("user") == '"user"'
    assert g.quote_ident("Orders") == '"Orders"'
    assert g.quote_ident('we"ird') == '"we""ird"'
    assert g.quote_ident("int") == '"int"'  # col_name keyword


def test_generators_module_is_pure() -> None:
    code = (
        "import sys, bluegreen.migrations.generators; "
        "bad = {'asyncpg', 'aiohttp', 'asyncio'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
