"""require-check-for-set-not-null: SET NOT NULL without a validated CHECK scans under lock."""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import (
    alter_cmds,
    ident,
    quote,
    relation_name,
    sql_block,
    table_sql,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-check-for-set-not-null",
    summary="ALTER COLUMN ... SET NOT NULL without a validated CHECK (col IS NOT NULL) scans "
    "the table under ACCESS EXCLUSIVE.",
    lock="ACCESS EXCLUSIVE for the whole scan: reads and writes wait",
    bad="ALTER TABLE users ALTER COLUMN phone SET NOT NULL;",
    safe="ALTER TABLE users ADD CONSTRAINT users_phone_not_null CHECK (phone IS NOT NULL) "
    "NOT VALID;\n-- next migration:\nALTER TABLE users VALIDATE CONSTRAINT users_phone_not_null;\n"
    "-- next migration:\nALTER TABLE users ALTER COLUMN phone SET NOT NULL;\n"
    "ALTER TABLE users DROP CONSTRAINT users_phone_not_null;",
)

WHY = (
    "To prove that no row is NULL, PostgreSQL reads the whole table while it holds ACCESS "
    "EXCLUSIVE: reads and writes wait for the full scan. With a validated CHECK (col IS NOT "
    "NULL) on the column, PostgreSQL 12+ skips the scan and the lock is brief."
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag SET NOT NULL unless a validated CHECK (col IS NOT NULL) is known."""
    findings = []
    for _, table, cmd in ctx.existing_table_cmds(stmt.node, AlterTableType.AT_SetNotNull):
        column = cmd.name or ""
        if ctx.has_not_null_check(table, column) or _check_dropped_later(ctx, table, column):
            continue
        t, c = table_sql(table), ident(column)
        check_name = ident(f"{table.split('.')[-1]}_{column}_not_null")
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"SET NOT NULL on {quote(table)}.{quote(column)} scans the table under "
                "ACCESS EXCLUSIVE",
                why=WHY,
                help=(
                    "Prove it with a CHECK first, each step in its own migration "
                    f"(`bluegreen migrate new set-not-null {table} {column}` writes them):\n"
                    + sql_block(
                        f"ALTER TABLE {t} ADD CONSTRAINT {check_name} CHECK ({c} IS NOT NULL) "
                        "NOT VALID",
                        "-- next migration: scans, but reads and writes go on",
                        f"ALTER TABLE {t} VALIDATE CONSTRAINT {check_name}",
                        "-- next migration: no scan, PostgreSQL uses the validated CHECK",
                        f"ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL",
                        f"ALTER TABLE {t} DROP CONSTRAINT {check_name}",
                    )
                ),
                lock=ctx.lock,
            )
        )
    return findings


def _check_dropped_later(ctx: Context, table: str, column: str) -> bool:
    """Whether the file drops a CHECK on the column right after (the last step of the pattern).

    ``SET NOT NULL`` followed by ``DROP CONSTRAINT <table>_<column>_not_null`` is the
    end of the CHECK ... NOT VALID -> VALIDATE -> SET NOT NULL sequence: the CHECK
    was validated by an earlier migration this lint run did not see.
    """
    for later in ctx.later():
        node = later.node
        if not isinstance(node, ast.AlterTableStmt) or relation_name(node.relation) != table:
            continue
        for cmd in alter_cmds(node, AlterTableType.AT_DropConstraint):
            name = (cmd.name or "").lower()
            if column.lower() in name and ("null" in name or "check" in name or "nn" in name):
                return True
    return False
