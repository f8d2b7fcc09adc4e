"""require-batched-backfill: a whole-table UPDATE/DELETE in one transaction."""

from __future__ import annotations

from typing import Any

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import (
    deparse,
    quote,
    relation_name,
    sql_block,
    strings,
    table_sql,
    walk,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-batched-backfill",
    summary="UPDATE or DELETE of a whole table (no WHERE, or a backfill condition such as "
    "col IS NULL) in one statement.",
    lock="ROW EXCLUSIVE, plus a row lock on every matched row until commit",
    bad="UPDATE orders SET status_code = status WHERE status_code IS NULL;",
    safe="-- bluegreen:backfill\nUPDATE orders SET status_code = status WHERE status_code IS NULL;",
)

WHY = (
    "One statement changes every matching row in a single transaction: each of those rows "
    "stays locked until it commits (the application's own updates of them wait), the table "
    "grows by a full copy of the rows, WAL and replication lag spike, and a failure or "
    "timeout rolls all of it back. On a large table that is minutes of degraded service."
)

# Columns that pick out one row or a few: equality on them is a targeted fix, not a backfill.
_KEY_NAMES = frozenset(
    {
        "id",
        "uuid",
        "key",
        "name",
        "slug",
        "email",
        "username",
        "handle",
        "version",
        "code",
        "sku",
        "token",
        "reference",
    }
)
_KEY_SUFFIXES = ("_id", "_uuid", "_key", "_slug", "_num", "_number", "_ref", "_code", "_name")

# Migration tools' own bookkeeping tables: one row per migration, updated by every migration.
BOOKKEEPING_TABLES = frozenset(
    {
        "alembic_version",
        "schema_migrations",
        "ar_internal_metadata",
        "django_migrations",
        "flyway_schema_history",
        "schema_version",
        "knex_migrations",
        "knex_migrations_lock",
        "goose_db_version",
        "sequelizemeta",
        "_prisma_migrations",
        "__diesel_schema_migrations",
        "bluegreen_migrations",
    }
)


def _is_key(column: str) -> bool:
    return column in _KEY_NAMES or column.endswith(_KEY_SUFFIXES)


def _constant(node: Any) -> bool:
    if isinstance(node, ast.TypeCast):
        return _constant(node.arg)
    return isinstance(node, ast.A_Const | ast.ParamRef)


def _constant_array(node: Any) -> bool:
    if isinstance(node, ast.A_ArrayExpr):
        return all(_constant(e) for e in node.elements or ())
    return _constant(node)  # '{1,2}'::int[] or a parameter


def _conjuncts(expr: Any) -> list[Any]:
    if isinstance(expr, ast.BoolExpr) and expr.boolop == BoolExprType.AND_EXPR:
        return [part for arg in expr.args or () for part in _conjuncts(arg)]
    return [expr]


def _column(node: Any) -> str | None:
    if isinstance(node, ast.ColumnRef):
        parts = strings(node.fields)
        return parts[-1] if parts else None
    return None


def is_targeted(where: Any) -> bool:
    """Whether a WHERE clause picks out specific rows or one batch (not a backfill)."""
    if where is None:
        return False
    lower: set[str] = set()
    upper: set[str] = set()
    for part in _conjuncts(where):
        if isinstance(part, ast.A_Expr):
            op = strings(part.name)[0] if part.name else ""
            left, right = _column(part.lexpr), _column(part.rexpr)
            column = left or right
            other = part.rexpr if left else part.lexpr
            if column is None or not _is_key(column):
                continue
            if part.kind == A_Expr_Kind.AEXPR_OP and op == "=" and _constant(other):
                return True
            if part.kind == A_Expr_Kind.AEXPR_IN and op == "=":
                values = part.rexpr if isinstance(part.rexpr, list | tuple) else ()
                if values and all(_constant(v) for v in values):
                    return True
            if part.kind == A_Expr_Kind.AEXPR_OP_ANY and op == "=" and _constant_array(other):
                return True
            if part.kind == A_Expr_Kind.AEXPR_BETWEEN:
                return True
            if part.kind == A_Expr_Kind.AEXPR_OP and _constant(other):
                flipped = right is not None and left is None
                if op in (">", ">="):
                    (upper if flipped else lower).add(column)
                elif op in ("<", "<="):
                    (lower if flipped else upper).add(column)
    if lower & upper:
        return True  # a key range: one batch
    # id IN (SELECT id ... LIMIT n): a batch
    return any(
        isinstance(node, ast.SelectStmt) and node.limitCount is not None for node in walk(where)
    )


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag UPDATE/DELETE of many rows of an old table that is not a batched backfill."""
    node = stmt.node
    if not isinstance(node, ast.UpdateStmt | ast.DeleteStmt):
        return []
    table = relation_name(node.relation)
    if table.split(".")[-1].lower() in BOOKKEEPING_TABLES:
        return []
    if ctx.is_new(table) or stmt.directive("backfill") is not None:
        return []
    if is_targeted(node.whereClause):
        return []
    verb = "UPDATE" if isinstance(node, ast.UpdateStmt) else "DELETE"
    if node.whereClause is None:
        message = f"{verb} without WHERE changes every row of {quote(table)} in one transaction"
    else:
        message = f"{verb} on {quote(table)} changes a whole set of rows in one transaction"
    if isinstance(node, ast.UpdateStmt):
        help_text = (
            "Make it a batched backfill in a migrate-phase migration: bluegreen runs it in "
            "short transactions by primary key, pausing between batches, and resumes after "
            "an interruption. Keep the WHERE false for rows already done so a rerun is "
            "harmless:\n"
            + sql_block("-- bluegreen:backfill batch-size=1000", stmt.text.rstrip(";"))
        )
        if node.whereClause is None:
            target = next(
                (t.name for t in node.targetList or () if isinstance(t, ast.ResTarget)), None
            )
            if target:
                help_text += (
                    f"\n(add a condition such as WHERE {target} IS DISTINCT FROM <new value> "
                    "so that finished rows are skipped)"
                )
    else:
        where = f" WHERE {deparse(node.whereClause)}" if node.whereClause is not None else ""
        t = table_sql(table)
        help_text = (
            "Delete in batches, each its own short transaction, repeating until no row is "  # noqa: S608 - help text shown to the user, never executed
            "deleted (a migrate-phase migration, or a script):\n"
            + sql_block(f"DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM {t}{where} LIMIT 5000)")  # noqa: S608 - help text shown to the user, never executed
            + "\nTo empty or retire a whole table, stop using it and drop it in a contract "
            "migration instead."
        )
    return [RULE.finding(stmt, ctx.path, message=message, why=WHY, help=help_text, lock=ctx.lock)]
