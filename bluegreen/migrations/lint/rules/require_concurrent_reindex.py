"""require-concurrent-reindex: REINDEX without CONCURRENTLY blocks the table."""

from __future__ import annotations

import copy

from pglast import ast

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import deparse, quote, relation_name, sql_block
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-concurrent-reindex",
    summary="REINDEX without CONCURRENTLY locks out writes and the queries that use the index.",
    lock="SHARE on the table and ACCESS EXCLUSIVE on each index being rebuilt",
    bad="REINDEX INDEX orders_created_at_idx;",
    safe="REINDEX INDEX CONCURRENTLY orders_created_at_idx;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a non-concurrent REINDEX."""
    node = stmt.node
    if not isinstance(node, ast.ReindexStmt):
        return []
    if any(getattr(p, "defname", "") == "concurrently" for p in node.params or ()):
        return []
    name = relation_name(node.relation) if node.relation is not None else (node.name or "")
    if name and ctx.is_new(name):
        return []
    fixed = copy.copy(node)
    fixed.params = (*(node.params or ()), ast.DefElem(defname="concurrently"))
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"REINDEX of {quote(name)} blocks writes, and queries that use the index",
            why=(
                "REINDEX holds SHARE on the table (INSERT, UPDATE and DELETE wait) and ACCESS "
                "EXCLUSIVE on each index it rebuilds; the planner locks every index of a table "
                "it plans a query for, so in practice reads of the table wait too."
            ),
            help=(
                "Rebuild concurrently (PostgreSQL 12+): reads and writes go on; it cannot run "
                "inside a transaction block, so the runner runs it on its own:\n"
                + sql_block(deparse(fixed))
            ),
            lock=ctx.lock,
        )
    ]
