"""require-default-for-not-null-column: ADD COLUMN ... NOT NULL without a DEFAULT."""

from __future__ import annotations

from pglast import ast
from pglast.enums import ConstrType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.locks import SERIAL_TYPES
from bluegreen.migrations.lint.nodes import (
    add_column_sql,
    column_default,
    column_not_null,
    column_without,
    deparse,
    has_constraint,
    quote,
    sql_block,
    type_spec,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-default-for-not-null-column",
    summary="ADD COLUMN ... NOT NULL without a DEFAULT on an existing table.",
    lock="ACCESS EXCLUSIVE (brief), but the statement fails on a table with rows",
    bad="ALTER TABLE users ADD COLUMN phone text NOT NULL;",
    safe="ALTER TABLE users ADD COLUMN phone text NOT NULL DEFAULT '';",
)

WHY = (
    "Existing rows have no value for the new column, so PostgreSQL rejects the statement on "
    "any table with rows (column contains null values) and the deploy stops half-way. Even "
    "where it succeeds, the code still serving traffic inserts rows without the column, and "
    "every such INSERT fails."
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a NOT NULL column added without a default to a table that existed before."""
    findings = []
    for node, table, column in ctx.columns_added_to_existing_table(stmt.node):
        spec = type_spec(column.typeName)
        if (
            not column_not_null(column)
            or column_default(column) is not None
            or (spec is not None and spec.name in SERIAL_TYPES)
            or has_constraint(column, ConstrType.CONSTR_IDENTITY)
            or has_constraint(column, ConstrType.CONSTR_GENERATED)
        ):
            continue
        type_sql = deparse(column.typeName)
        nullable = column_without(
            column, ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE
        )
        with_default = column_without(column, ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE)
        with_default.constraints = (
            *(with_default.constraints or ()),
            ast.Constraint(contype=ConstrType.CONSTR_DEFAULT, raw_expr=_placeholder(type_sql)),
        )
        help_text = (
            "Either give it a constant DEFAULT (stored in the catalog since PostgreSQL 11: no "
            "rewrite, and the old code's INSERTs get the default):\n"
            + sql_block(add_column_sql(node, with_default))
            + "\nor add it nullable, backfill it, and tighten it to NOT NULL in phases "
            f"(`bluegreen migrate new set-not-null {table} {column.colname}` writes the "
            "CHECK ... NOT VALID, VALIDATE and SET NOT NULL steps):\n"
            + sql_block(add_column_sql(node, nullable))
        )
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"ADD COLUMN {quote(column.colname or '')} {type_sql} NOT NULL on "
                f"{quote(table)} has no DEFAULT",
                why=WHY,
                help=help_text,
                lock=ctx.lock,
            )
        )
    return findings


def _placeholder(type_sql: str) -> ast.A_Const:
    """A constant default that fits the usual types, for the example in the help."""
    numeric = ("int", "integer", "bigint", "smallint", "numeric", "real", "double", "decimal")
    if type_sql.startswith(numeric):
        return ast.A_Const(val=ast.Integer(ival=0))
    if type_sql.startswith("bool"):
        return ast.A_Const(val=ast.Boolean(boolval=False))
    return ast.A_Const(val=ast.String(sval=""))
