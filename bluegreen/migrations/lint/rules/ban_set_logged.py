"""ban-set-logged: ALTER TABLE ... SET LOGGED / SET UNLOGGED rewrites the table."""

from __future__ import annotations

from pglast.enums import AlterTableType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import quote
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-set-logged",
    summary="ALTER TABLE ... SET LOGGED or SET UNLOGGED on a table in use.",
    lock="ACCESS EXCLUSIVE for the whole rewrite: reads and writes wait",
    bad="ALTER TABLE page_views SET UNLOGGED;",
    safe="CREATE UNLOGGED TABLE page_views_buffer (id bigint, viewed_at timestamptz);",
)

_WHAT = {AlterTableType.AT_SetLogged: "SET LOGGED", AlterTableType.AT_SetUnLogged: "SET UNLOGGED"}


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag SET LOGGED / SET UNLOGGED on a table that existed before this file."""
    cmds = ctx.existing_table_cmds(stmt.node, *_WHAT)
    if not cmds:
        return []
    _, table, first = cmds[0]
    what = _WHAT.get(first.subtype or AlterTableType.AT_SetLogged, "SET LOGGED")
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"{what} on {quote(table)} rewrites the table under ACCESS EXCLUSIVE",
            why=(
                f"{what} copies the whole table (SET LOGGED also writes all of it to the WAL, "
                "which replicas must replay) while holding ACCESS EXCLUSIVE: reads and writes "
                "wait until it is done. An UNLOGGED table is also emptied after a crash and is "
                "not replicated."
            ),
            help=(
                "Choose persistence when the table is created (CREATE [UNLOGGED] TABLE). To "
                "change it for a table in use, create a new table with the wanted persistence, "
                "copy the data in batches, and switch the code to it (expand/migrate/contract)."
            ),
            lock=ctx.lock,
        )
    ]
