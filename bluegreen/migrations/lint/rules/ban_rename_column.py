"""ban-rename-column: renaming a column breaks the code that is still running."""

from __future__ import annotations

from pglast import ast
from pglast.enums import ObjectType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import quote, relation_name
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-rename-column",
    summary="ALTER TABLE ... RENAME COLUMN on a table in use.",
    lock="ACCESS EXCLUSIVE (brief); the hazard is compatibility, not the lock",
    bad="ALTER TABLE users RENAME COLUMN name TO full_name;",
    safe="ALTER TABLE users ADD COLUMN full_name text;  "
    "-- + sync trigger, backfill, then drop name in contract",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag RENAME COLUMN of a column that existed before this file."""
    node = stmt.node
    if not isinstance(node, ast.RenameStmt) or node.renameType != ObjectType.OBJECT_COLUMN:
        return []
    table = relation_name(node.relation)
    old, new = node.subname or "", node.newname or ""
    if ctx.is_new_column(table, old):
        return []
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"RENAME COLUMN {quote(old)} TO {quote(new)} on {quote(table)} breaks the "
            "code that is running",
            why=(
                f"During a rollout the old version of the application keeps serving traffic and "
                f"uses {quote(old)}; the moment the rename commits, its queries fail (column "
                f"{quote(old)} does not exist), and the new version fails the same way on "
                f"{quote(new)} if it runs before the rename. A rename cannot be backward "
                "compatible."
            ),
            help=(
                "Rename in three phases with a new column (the seed's expand/migrate/contract; "
                f"`bluegreen migrate new rename-column {table} {old} {new}` writes them):\n"
                f"    -- expand: ADD COLUMN {new}, plus a trigger that keeps {old} and {new} "
                "equal on every write\n"
                f"    -- migrate: backfill {new} from {old} in batches (-- bluegreen:backfill)\n"
                f"    -- deploy code that reads and writes {new}, shift all traffic to it\n"
                f"    -- contract: drop the trigger and {old}"
            ),
            lock=ctx.lock,
        )
    ]
