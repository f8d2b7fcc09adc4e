"""ban-data-change-outside-migrate: UPDATE/DELETE in an expand or contract migration."""

from __future__ import annotations

from pglast import ast

from bluegreen.migrations.files import Phase
from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import quote, relation_name
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-data-change-outside-migrate",
    summary="UPDATE, DELETE or MERGE on an existing table in an expand or contract migration.",
    lock="ROW EXCLUSIVE and row locks; the hazard is when it runs",
    bad="-- bluegreen:phase expand\n-- bluegreen:up\n"
    "ALTER TABLE orders ADD COLUMN status_code text;\n"
    "UPDATE orders SET status_code = status;",
    safe="-- bluegreen:phase migrate\n-- bluegreen:up\n-- bluegreen:backfill\n"
    "UPDATE orders SET status_code = status WHERE status_code IS NULL;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag data changes to old tables in expand and contract migrations."""
    node = stmt.node
    if ctx.phase not in (Phase.EXPAND, Phase.CONTRACT):
        return []
    if not isinstance(node, ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
        return []
    table = relation_name(node.relation)
    if ctx.is_new(table):
        return []
    verb = type(node).__name__.removesuffix("Stmt").upper()
    phase = ctx.phase.value if ctx.phase else ""
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"{verb} on {quote(table)} in a{'n' if phase == 'expand' else ''} {phase} "
            "migration; data changes belong to the migrate phase",
            why=(
                "Expand only adds structure that the old and the new code can both use, and "
                "contract only removes what neither uses. A data change there runs at the wrong "
                "point of the rollout (in expand, before the code that keeps the new structure "
                "up to date is deployed), inside the same transaction as the DDL and its locks, "
                "and it cannot be batched, throttled or resumed."
            ),
            help=(
                "Move it to a migrate-phase migration and, if it touches many rows, mark it as "
                "a batched backfill:\n"
                "    -- bluegreen:phase migrate\n"
                "    -- bluegreen:up\n"
                "    -- bluegreen:backfill\n"
                f"    {stmt.text.rstrip(';')};"
            ),
            lock=ctx.lock,
        )
    ]
