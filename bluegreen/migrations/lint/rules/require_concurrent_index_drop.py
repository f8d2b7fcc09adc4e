"""require-concurrent-index-drop: DROP INDEX without CONCURRENTLY locks the table."""

from __future__ import annotations

from pglast import ast
from pglast.enums import ObjectType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import ident, qualified, quote, sql_block
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-concurrent-index-drop",
    summary="DROP INDEX without CONCURRENTLY takes ACCESS EXCLUSIVE on the index's table.",
    lock="ACCESS EXCLUSIVE on the table: reads and writes wait behind it",
    bad="DROP INDEX users_email_idx;",
    safe="DROP INDEX CONCURRENTLY IF EXISTS users_email_idx;",
)

WHY = (
    "DROP INDEX takes an ACCESS EXCLUSIVE lock on the index's table. It first waits for every "
    "query running on the table, and every query that arrives meanwhile waits behind it: one "
    "slow report turns a millisecond drop into an outage."
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a non-concurrent DROP INDEX of an index that existed before this file."""
    node = stmt.node
    if not isinstance(node, ast.DropStmt) or node.removeType != ObjectType.OBJECT_INDEX:
        return []
    if node.concurrent:
        return []
    names = [qualified(o) for o in node.objects or () if isinstance(o, tuple | list)]
    old = []
    for name in names:
        table = ctx.index_table(name)
        if name in ctx.indexes_created or (table is not None and ctx.is_new(table)):
            continue
        old.append(name)
    if not old:
        return []
    where = ""
    known = [t for t in (ctx.index_table(n) for n in old) if t]
    if known:
        where = f" (on {', '.join(quote(t) for t in dict.fromkeys(known))})"
    drops = [
        f"DROP INDEX CONCURRENTLY IF EXISTS {'.'.join(ident(p) for p in n.split('.'))}" for n in old
    ]
    help_text = (
        "Drop it concurrently, one index per statement (CONCURRENTLY cannot drop several "
        "indexes at once, use CASCADE, or run inside a transaction block; the runner runs it "
        "on its own):\n" + sql_block(*drops)
    )
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"DROP INDEX {', '.join(quote(n) for n in old)}{where} locks its table "
            "against reads and writes",
            why=WHY,
            help=help_text,
            lock=ctx.lock,
        )
    ]
