"""ban-cluster: CLUSTER rewrites the table under ACCESS EXCLUSIVE."""

from __future__ import annotations

from pglast import ast

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import quote, relation_name
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-cluster",
    summary="CLUSTER rewrites the table in index order under ACCESS EXCLUSIVE.",
    lock="ACCESS EXCLUSIVE for the whole rewrite: reads and writes wait",
    bad="CLUSTER orders USING orders_created_at_idx;",
    safe="ALTER TABLE orders CLUSTER ON orders_created_at_idx;  "
    "-- only marks the index; no rewrite",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag CLUSTER of a table that existed before this file."""
    node = stmt.node
    if not isinstance(node, ast.ClusterStmt):
        return []
    table = relation_name(node.relation) if node.relation is not None else ""
    if table and ctx.is_new(table):
        return []
    what = quote(table) if table else "every previously clustered table"
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"CLUSTER of {what} rewrites it under ACCESS EXCLUSIVE",
            why=(
                "CLUSTER copies the whole table in index order and rebuilds every index while "
                "holding ACCESS EXCLUSIVE: reads and writes wait until it is done."
            ),
            help=(
                "Leave physical ordering out of migrations. If it matters, rebuild online with "
                "pg_repack --order-by outside the migration, or schedule CLUSTER in a "
                "maintenance window."
            ),
            lock=ctx.lock,
        )
    ]
