"""require-concurrent-refresh: REFRESH MATERIALIZED VIEW without CONCURRENTLY blocks reads."""

from __future__ import annotations

import copy

from pglast import ast

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import deparse, quote, relation_name, sql_block
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-concurrent-refresh",
    summary="REFRESH MATERIALIZED VIEW without CONCURRENTLY blocks reads of the view.",
    lock="ACCESS EXCLUSIVE on the view for the whole refresh: reads wait",
    bad="REFRESH MATERIALIZED VIEW daily_sales;",
    safe="REFRESH MATERIALIZED VIEW CONCURRENTLY daily_sales;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a blocking refresh of a materialized view that existed before this file."""
    node = stmt.node
    if not isinstance(node, ast.RefreshMatViewStmt) or node.concurrent or node.skipData:
        return []
    view = relation_name(node.relation)
    if ctx.is_new(view):
        return []
    fixed = copy.copy(node)
    fixed.concurrent = True
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"REFRESH MATERIALIZED VIEW {quote(view)} blocks reads of it for the "
            "whole refresh",
            why=(
                "A plain refresh recomputes the view under ACCESS EXCLUSIVE: every query that "
                "reads it waits until the query behind the view has run to the end."
            ),
            help=(
                "Refresh concurrently: readers keep the old contents until the new ones are "
                "ready. It needs a unique index on the view (create it once, CONCURRENTLY):\n"
                + sql_block(deparse(fixed))
            ),
            lock=ctx.lock,
        )
    ]
