"""ban-set-tablespace: ALTER TABLE ... SET TABLESPACE / SET ACCESS METHOD copies the table."""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType, ObjectType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import alter_cmds, quote, relation_name
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-set-tablespace",
    summary="ALTER TABLE/INDEX ... SET TABLESPACE or SET ACCESS METHOD on an object in use.",
    lock="ACCESS EXCLUSIVE for the whole copy: reads and writes wait",
    bad="ALTER TABLE events SET TABLESPACE archive;",
    safe="CREATE INDEX CONCURRENTLY events_day_idx2 ON events (day) TABLESPACE fast;",
)

_WHAT = {
    AlterTableType.AT_SetTableSpace: "SET TABLESPACE",
    AlterTableType.AT_SetAccessMethod: "SET ACCESS METHOD",
}


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag SET TABLESPACE / SET ACCESS METHOD on an object that existed before this file."""
    node = stmt.node
    if not isinstance(node, ast.AlterTableStmt):
        return []
    name = relation_name(node.relation)
    cmds = alter_cmds(node, *_WHAT)
    if not cmds or ctx.is_new(name) or name in ctx.indexes_created:
        return []
    what = _WHAT.get(cmds[0].subtype or AlterTableType.AT_SetTableSpace, "SET TABLESPACE")
    kind = "index" if node.objtype == ObjectType.OBJECT_INDEX else "table"
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"{what} on {kind} {quote(name)} copies it under ACCESS EXCLUSIVE",
            why=(
                f"{what} copies every block of the {kind} to its new place while holding "
                "ACCESS EXCLUSIVE: reads and writes wait for the whole copy."
            ),
            help=(
                "For an index, build a new one CONCURRENTLY in the target tablespace and drop "
                "the old one CONCURRENTLY. For a table, use an online rebuild tool (pg_repack "
                "--tablespace) outside the migration, or move it in a maintenance window."
            ),
            lock=ctx.lock,
        )
    ]
