"""ban-transaction-control-in-migration: BEGIN/COMMIT inside a bluegreen migration file."""

from __future__ import annotations

from pglast import ast

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import first_line
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-transaction-control-in-migration",
    summary="BEGIN, COMMIT, ROLLBACK or SAVEPOINT in a bluegreen migration file.",
    lock="none: the runner refuses the file",
    bad="-- bluegreen:phase expand\n-- bluegreen:up\nBEGIN;\n"
    "ALTER TABLE users ADD COLUMN phone text;\nCOMMIT;",
    safe="-- bluegreen:phase expand\n-- bluegreen:up\nALTER TABLE users ADD COLUMN phone text;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag transaction control statements in migration files (the runner owns transactions)."""
    if not ctx.migration or not isinstance(stmt.node, ast.TransactionStmt):
        return []
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"transaction control ({first_line(stmt.text)}) in a migration file",
            why=(
                "bluegreen's runner opens and commits the transactions itself (grouping "
                "statements, running CONCURRENTLY statements and backfills on their own, with "
                "lock_timeout retries), and refuses a file that does it too."
            ),
            help="Remove it; statements that cannot run in a transaction run on their own.",
            lock=None,
        )
    ]
