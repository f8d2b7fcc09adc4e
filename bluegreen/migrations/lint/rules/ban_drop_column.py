"""ban-drop-column: dropping a column outside a contract migration."""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import alter_cmds, quote, relation_name
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-drop-column",
    summary="ALTER TABLE ... DROP COLUMN outside a contract-phase migration.",
    lock="ACCESS EXCLUSIVE (brief, no rewrite); the hazard is the code still using the column",
    bad="ALTER TABLE users DROP COLUMN legacy_status;",
    safe="-- bluegreen:phase contract\n-- bluegreen:up\n"
    "ALTER TABLE users DROP COLUMN legacy_status;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag DROP COLUMN of an old column unless the file is a contract migration."""
    node = stmt.node
    if ctx.contract or not isinstance(node, ast.AlterTableStmt):
        return []
    table = relation_name(node.relation)
    findings = []
    for cmd in alter_cmds(node, AlterTableType.AT_DropColumn):
        column = cmd.name or ""
        if ctx.is_new_column(table, column):
            continue
        where = f"an {ctx.phase.value} migration" if ctx.phase else "a migration with no phase"
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"DROP COLUMN {quote(column)} on {quote(table)} in {where}",
                why=(
                    "The version of the application that is still serving traffic (and any "
                    "ORM that lists every column, or a prepared SELECT *) reads and writes "
                    f"{quote(column)}; once it is dropped those queries fail. The data is "
                    "gone too: a rollback cannot bring it back."
                ),
                help=(
                    "1. Deploy code that no longer reads or writes the column (tell the ORM "
                    "to ignore it: Rails ignored_columns, Django remove the field first).\n"
                    "2. Drop it in a contract-phase migration, which bluegreen runs only once "
                    "the old version no longer serves traffic "
                    f"(`bluegreen migrate new drop-column {table} {column}`):\n"
                    "    -- bluegreen:phase contract\n"
                    "    -- bluegreen:up\n"
                    f"    {stmt.text.rstrip(';')};"
                ),
                lock=ctx.lock,
            )
        )
    return findings
