"""ban-truncate: TRUNCATE of a table in use, outside a contract migration."""

from __future__ import annotations

from pglast import ast
from pglast.enums import DropBehavior

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import quote, relation_name
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-truncate",
    summary="TRUNCATE of a table in use (ACCESS EXCLUSIVE, all data gone at once).",
    lock="ACCESS EXCLUSIVE: reads and writes wait; every row is removed",
    bad="TRUNCATE sessions;",
    safe="DELETE FROM sessions WHERE ctid IN (SELECT ctid FROM sessions "
    "WHERE created_at < now() - interval '30 days' LIMIT 5000);  -- repeated",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag TRUNCATE of old tables outside contract migrations."""
    node = stmt.node
    if not isinstance(node, ast.TruncateStmt) or ctx.contract:
        return []
    old = [t for t in (relation_name(rv) for rv in node.relations or ()) if not ctx.is_new(t)]
    if not old:
        return []
    cascade = node.behavior == DropBehavior.DROP_CASCADE
    tables = ", ".join(quote(t) for t in old)
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"TRUNCATE {tables}{' CASCADE' if cascade else ''} removes every row "
            "under ACCESS EXCLUSIVE"
            + (", and every row of each table that references it" if cascade else ""),
            why=(
                "TRUNCATE takes ACCESS EXCLUSIVE (it waits for every running query on the "
                "table, and everything queues behind it) and deletes all the data the running "
                "application still uses; a down migration cannot bring it back."
            ),
            help=(
                "To remove old data, delete it in batches in a migrate-phase migration. To "
                "retire a table, stop using it and drop it in a contract migration."
            ),
            lock=ctx.lock,
        )
    ]
