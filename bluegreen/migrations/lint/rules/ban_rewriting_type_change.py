"""ban-rewriting-type-change: ALTER COLUMN ... TYPE that rewrites the table."""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.locks import type_change, using_converts
from bluegreen.migrations.lint.nodes import (
    deparse,
    ident,
    quote,
    sql_block,
    table_sql,
    type_spec,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-rewriting-type-change",
    summary="ALTER COLUMN ... TYPE that rewrites the table (int -> bigint, text -> varchar(n), "
    "any USING ...).",
    lock="ACCESS EXCLUSIVE for the whole rewrite and index rebuild: reads and writes wait",
    bad="ALTER TABLE orders ALTER COLUMN id TYPE bigint;",
    safe="ALTER TABLE users ALTER COLUMN name TYPE varchar(200);  -- was varchar(100): widening",
)

WHY = (
    "The new type is written into every row: PostgreSQL rewrites the table and rebuilds its "
    "indexes under ACCESS EXCLUSIVE, so reads and writes wait for all of it. The code that is "
    "still running also reads and writes the column with the old type, which the change can "
    "break. Only changes that need no conversion are instant: varchar(n) to varchar(m > n) or "
    "text, numeric(p, s) to numeric(q > p, s), dropping a length or precision limit."
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a column type change that rewrites a table that existed before this file."""
    findings = []
    for _, table, cmd in ctx.existing_table_cmds(stmt.node, AlterTableType.AT_AlterColumnType):
        definition = cmd.def_
        if not isinstance(definition, ast.ColumnDef):
            continue
        new = type_spec(definition.typeName)
        if new is None:
            continue
        column = cmd.name or ""
        using = using_converts(column, definition.raw_default, new)
        cast = definition.raw_default is not None and not using
        change = type_change(ctx.column_type(table, column), new, using=using, cast=cast)
        if not change.rewrites:
            continue
        new_sql = deparse(definition.typeName)
        t, c = table_sql(table), ident(column)
        temp = ident(f"{column}_new")
        conversion = (
            deparse(definition.raw_default)
            if definition.raw_default is not None
            else f"{c}::{new_sql}"
        )
        help_text = (
            "Change it through a new column, so both versions of the code keep working "  # noqa: S608 - help text shown to the user, never executed
            f"(`bluegreen migrate new change-type {table} {column} '{new_sql}'` writes these "
            "migrations):\n"
            + sql_block(
                "-- expand:",
                f"ALTER TABLE {t} ADD COLUMN {temp} {new_sql}",
                f"-- + a trigger that keeps {temp} equal to {c} on every write",
                "-- migrate:",
                "-- bluegreen:backfill",
                f"UPDATE {t} SET {temp} = {conversion} WHERE {temp} IS NULL",  # noqa: S608 - help text shown to the user, never executed
                f"-- deploy code that uses {temp}; then contract:",
                f"ALTER TABLE {t} DROP COLUMN {c}",
            )
        )
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"ALTER COLUMN {quote(column)} TYPE {new_sql} on {quote(table)} "
                f"rewrites the table ({change.reason})",
                why=WHY,
                help=help_text,
                lock=ctx.lock,
            )
        )
    return findings
