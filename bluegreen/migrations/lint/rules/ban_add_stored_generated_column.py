"""ban-add-stored-generated-column: a STORED generated column rewrites the table."""

from __future__ import annotations

from pglast.enums import ConstrType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import (
    column_constraints,
    deparse,
    ident,
    quote,
    sql_block,
    table_sql,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-add-stored-generated-column",
    summary="ADD COLUMN ... GENERATED ALWAYS AS (...) STORED on an existing table rewrites it.",
    lock="ACCESS EXCLUSIVE for the whole rewrite: reads and writes wait",
    bad="ALTER TABLE orders ADD COLUMN total_cents bigint "
    "GENERATED ALWAYS AS (total * 100) STORED;",
    safe="ALTER TABLE orders ADD COLUMN total_cents bigint;  "
    "-- filled by a trigger, backfilled in batches",
)

WHY = (
    "A stored generated column is computed and written for every existing row, so PostgreSQL "
    "rewrites the whole table under an ACCESS EXCLUSIVE lock: reads and writes wait until the "
    "copy is done."
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a stored generated column added to a table that existed before this file."""
    findings = []
    for _node, table, column in ctx.columns_added_to_existing_table(stmt.node):
        generated = [
            c
            for c in column_constraints(column)
            if c.contype == ConstrType.CONSTR_GENERATED and c.generated_kind == "s"
        ]
        if not generated:
            continue
        t, c = table_sql(table), ident(column.colname or "")
        expr = deparse(generated[0].raw_expr)
        help_text = (
            "There is no online way to add a stored generated column. Add a plain column, keep "  # noqa: S608 - help text shown to the user, never executed
            "it computed with a trigger, and fill the existing rows in batches:\n"
            + sql_block(
                f"ALTER TABLE {t} ADD COLUMN {c} {deparse(column.typeName)}",
                "-- a BEFORE INSERT OR UPDATE trigger that sets NEW."
                + (column.colname or "")
                + f" := {expr}",
                "-- migrate phase:",
                "-- bluegreen:backfill",
                f"UPDATE {t} SET {c} = {expr} WHERE {c} IS NULL",  # noqa: S608 - help text shown to the user, never executed
            )
            + "\nOr create the table with the column from the start (a new table is empty)."
        )
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"ADD COLUMN {quote(column.colname or '')} GENERATED ... STORED on "
                f"{quote(table)} rewrites the table",
                why=WHY,
                help=help_text,
                lock=ctx.lock,
            )
        )
    return findings
