"""require-concurrent-index: CREATE INDEX without CONCURRENTLY blocks writes while it builds."""

from __future__ import annotations

import copy

from pglast import ast

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import deparse, quote, relation_name, sql_block
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-concurrent-index",
    summary="CREATE INDEX on an existing table without CONCURRENTLY blocks writes while it builds.",
    lock="SHARE: INSERT, UPDATE and DELETE wait until the whole index is built",
    bad="CREATE INDEX users_email_idx ON users (email);",
    safe="CREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
)

WHY = (
    "A plain CREATE INDEX holds a SHARE lock on the table for the whole build: every INSERT, "
    "UPDATE and DELETE on it waits (minutes on a large table) and the application's requests "
    "pile up behind them."
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a non-concurrent CREATE INDEX on a table that existed before this file."""
    node = stmt.node
    if not isinstance(node, ast.IndexStmt) or node.concurrent:
        return []
    table = relation_name(node.relation)
    if ctx.is_new(table):
        return []
    fixed = copy.copy(node)
    fixed.concurrent = True
    kind = "CREATE UNIQUE INDEX" if node.unique else "CREATE INDEX"
    help_text = (
        "Build it concurrently: reads and writes go on during the build (it takes longer, "
        "and cannot run inside a transaction block; the runner runs it on its own):\n"
        + sql_block(deparse(fixed))
        + "\nIf the build fails it leaves an INVALID index: drop it with DROP INDEX "
        "CONCURRENTLY and build it again (`bluegreen migrate up` does this before a retry)."
    )
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"{kind} on {quote(table)} blocks writes while the index builds",
            why=WHY,
            help=help_text,
            lock=ctx.lock,
        )
    ]
