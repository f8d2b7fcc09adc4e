"""ban-drop-table: dropping a table (or a view, or a schema with CASCADE) outside contract."""

from __future__ import annotations

from pglast import ast
from pglast.enums import DropBehavior, ObjectType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import qualified, quote, relation_name
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-drop-table",
    summary="DROP TABLE (or DROP VIEW not recreated, DROP SCHEMA ... CASCADE) of objects in use, "
    "outside a contract-phase migration.",
    lock="ACCESS EXCLUSIVE (brief); the hazard is the code still using the table",
    bad="DROP TABLE legacy_orders;",
    safe="-- bluegreen:phase contract\n-- bluegreen:up\nDROP TABLE legacy_orders;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag DROP TABLE of tables that existed before this file, outside contract."""
    node = stmt.node
    if ctx.contract or not isinstance(node, ast.DropStmt):
        return []
    kind = _KINDS.get(node.removeType or ObjectType.OBJECT_TABLE)
    if kind is None:
        return []
    if node.removeType == ObjectType.OBJECT_SCHEMA and node.behavior != DropBehavior.DROP_CASCADE:
        return []  # an empty schema: nothing to lose
    names = [_name(o) for o in node.objects or ()]
    old = [n for n in names if n and not ctx.is_new(n) and not _recreated(ctx, n)]
    if not old:
        return []
    where = f"an {ctx.phase.value} migration" if ctx.phase else "a migration with no phase"
    tables = f"{kind} " + ", ".join(quote(n) for n in old)
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"DROP {tables} in {where}",
            why=(
                "The version of the application still serving traffic may read or write it; "
                "once it is dropped those queries fail, and the data cannot come back with a "
                "rollback. DROP TABLE also takes ACCESS EXCLUSIVE on every table its foreign "
                "keys reference."
            ),
            help=(
                "1. Deploy code that no longer uses it.\n"
                "2. Drop it in a contract-phase migration, which bluegreen runs only once the "
                "old version no longer serves traffic (keep a backup, or rename it first and "
                "drop it a release later):\n"
                "    -- bluegreen:phase contract\n"
                "    -- bluegreen:up\n"
                f"    {stmt.text.rstrip(';')};"
            ),
            lock=ctx.lock,
        )
    ]


_KINDS = {
    ObjectType.OBJECT_TABLE: "TABLE",
    ObjectType.OBJECT_VIEW: "VIEW",
    ObjectType.OBJECT_MATVIEW: "MATERIALIZED VIEW",
    ObjectType.OBJECT_SCHEMA: "SCHEMA",
}


def _name(obj: object) -> str:
    if isinstance(obj, tuple | list):
        return qualified(obj)
    return str(getattr(obj, "sval", "") or "")


def _recreated(ctx: Context, name: str) -> bool:
    """Whether a later statement creates a relation of the same name (drop-and-recreate)."""
    for later in ctx.later():
        node = later.node
        if isinstance(node, ast.ViewStmt) and relation_name(node.view) == name:
            return True
        if isinstance(node, ast.CreateStmt) and relation_name(node.relation) == name:
            return True
        if isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
            return relation_name(node.into.rel) == name
    return False
