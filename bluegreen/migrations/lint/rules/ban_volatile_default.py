"""ban-volatile-default: ADD COLUMN with a volatile DEFAULT rewrites the whole table."""

from __future__ import annotations

from pglast.enums import ConstrType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.locks import SERIAL_TYPES, default_volatility
from bluegreen.migrations.lint.nodes import (
    add_column_sql,
    column_default,
    column_not_null,
    column_without,
    deparse,
    has_constraint,
    ident,
    quote,
    sql_block,
    table_sql,
    type_spec,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-volatile-default",
    summary="ADD COLUMN with a volatile DEFAULT (random(), gen_random_uuid(), clock_timestamp()) "
    "rewrites the table.",
    lock="ACCESS EXCLUSIVE for the whole rewrite: reads and writes wait",
    bad="ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();",
    safe="ALTER TABLE users ADD COLUMN token uuid;\n"
    "ALTER TABLE users ALTER COLUMN token SET DEFAULT gen_random_uuid();",
)

WHY = (
    "A volatile default gives every row its own value, so PostgreSQL computes it for each "
    "existing row and rewrites the whole table under an ACCESS EXCLUSIVE lock: reads and "
    "writes wait until the copy is done. Constant and stable defaults (0, 'new', now()) are "
    "stored once in the catalog and cost nothing since PostgreSQL 11."
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag ADD COLUMN ... DEFAULT <volatile> on a table that existed before this file."""
    findings = []
    for node, table, column in ctx.columns_added_to_existing_table(stmt.node):
        default = column_default(column)
        spec = type_spec(column.typeName)
        if default is None or (spec and spec.name in SERIAL_TYPES):
            continue
        volatile, function = default_volatility(default, ctx)
        if not volatile:
            continue
        name, t, expr = ident(column.colname or ""), table_sql(table), deparse(default)
        bare = column_without(column, ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_NOTNULL)
        steps = [
            add_column_sql(node, bare),
            f"ALTER TABLE {t} ALTER COLUMN {name} SET DEFAULT {expr}  -- new rows only",
        ]
        help_text = (
            "Add the column without the default, then set the default (neither rewrites), "  # noqa: S608 - help text shown to the user, never executed
            "and fill the existing rows in batches in a migrate-phase migration:\n"
            + sql_block(*steps)
            + "\n"
            + sql_block(
                "-- bluegreen:backfill",
                f"UPDATE {t} SET {name} = {expr} WHERE {name} IS NULL",  # noqa: S608 - help text shown to the user, never executed
            )
        )
        if column_not_null(column) and not has_constraint(column, ConstrType.CONSTR_PRIMARY):
            help_text += (
                "\nThen make it NOT NULL without a scan under lock: "
                f"`bluegreen migrate new set-not-null {table} {column.colname}`."
            )
        qualifier = (
            ""
            if function in ("random", "gen_random_uuid", "clock_timestamp")
            else (" (a function not known to be IMMUTABLE or STABLE counts as volatile)")
        )
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"ADD COLUMN {quote(column.colname or '')} on {quote(table)} with "
                f"volatile DEFAULT {function}() rewrites the table{qualifier}",
                why=WHY,
                help=help_text,
                lock=ctx.lock,
            )
        )
    return findings
