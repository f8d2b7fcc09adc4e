"""ban-rename-table: renaming (or moving) a table breaks the code that is still running."""

from __future__ import annotations

from pglast import ast
from pglast.enums import ObjectType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import quote, relation_name, sql_block, table_sql
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-rename-table",
    summary="ALTER TABLE ... RENAME TO / SET SCHEMA on a table in use, without a view under "
    "the old name.",
    lock="ACCESS EXCLUSIVE (brief); the hazard is compatibility, not the lock",
    bad="ALTER TABLE users RENAME TO accounts;",
    safe="ALTER TABLE users RENAME TO accounts;\nCREATE VIEW users AS SELECT * FROM accounts;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag renaming a table that existed before this file, unless a view keeps the old name."""
    node = stmt.node
    if isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_TABLE:
        table = relation_name(node.relation)
        schema = table.rsplit(".", 1)[0] + "." if "." in table else ""
        new = f"{schema}{node.newname}"
        verb = f"RENAME TO {quote(node.newname or '')}"
    elif isinstance(node, ast.AlterObjectSchemaStmt) and node.objectType == ObjectType.OBJECT_TABLE:
        table = relation_name(node.relation)
        new = f"{node.newschema}.{table.split('.')[-1]}"
        verb = f"SET SCHEMA {quote(node.newschema or '')}"
    else:
        return []
    if ctx.is_new(table) or _view_keeps_name(ctx, table):
        return []
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"{verb} on {quote(table)} breaks the code that is running",
            why=(
                f"The old version of the application keeps using {quote(table)} during the "
                "rollout; the moment the rename commits, its queries fail (relation does not "
                "exist)."
            ),
            help=(
                "Rename it and leave an updatable view under the old name in the same "  # noqa: S608 - help text shown to the user, never executed
                "migration (a plain SELECT * view accepts INSERT, UPDATE and DELETE), so both "
                "versions work; drop the view in a contract migration once nothing uses the "
                "old name:\n"
                + sql_block(
                    stmt.text.rstrip(";"),
                    f"CREATE VIEW {table_sql(table)} AS SELECT * FROM {table_sql(new)}",  # noqa: S608 - help text shown to the user, never executed
                    "-- contract:",
                    f"DROP VIEW {table_sql(table)}",
                )
            ),
            lock=ctx.lock,
        )
    ]


def _view_keeps_name(ctx: Context, table: str) -> bool:
    for later in ctx.later():
        node = later.node
        if isinstance(node, ast.ViewStmt) and relation_name(node.view) == table:
            return True
    return False
