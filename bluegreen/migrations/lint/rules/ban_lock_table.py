"""ban-lock-table: an explicit LOCK TABLE that blocks reads or writes."""

from __future__ import annotations

from pglast import ast

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import quote, relation_name
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-lock-table",
    summary="LOCK TABLE in a mode that blocks writes (SHARE and stronger) or reads.",
    lock="the mode it names (ACCESS EXCLUSIVE by default), until the transaction ends",
    bad="LOCK TABLE orders IN ACCESS EXCLUSIVE MODE;",
    safe="-- no explicit lock: each statement takes the lock it needs, "
    "bounded by the runner's lock_timeout",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag LOCK TABLE on old tables in a mode that blocks the application."""
    node = stmt.node
    if not isinstance(node, ast.LockStmt) or not ctx.lock.blocks:
        return []
    tables = [relation_name(rv) for rv in node.relations or ()]
    old = [t for t in tables if not ctx.is_new(t)]
    if not old:
        return []
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"LOCK TABLE {', '.join(quote(t) for t in old)} IN {ctx.lock.mode} MODE "
            f"blocks {ctx.lock.blocks} until the transaction ends",
            why=(
                "An explicit lock is held until the end of the transaction, across every "
                "statement after it, and it queues behind running queries while the "
                "application's new queries queue behind it."
            ),
            help=(
                "Remove it: every statement takes the weakest lock that is correct for it, and "
                "bluegreen's runner bounds each wait with lock_timeout and retries. To "
                "serialise a data fix, lock only the rows concerned (SELECT ... FOR UPDATE)."
            ),
            lock=ctx.lock,
        )
    ]
