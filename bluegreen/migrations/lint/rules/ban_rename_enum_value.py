"""ban-rename-enum-value: renaming an enum value breaks the code that still writes it."""

from __future__ import annotations

from pglast import ast

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import qualified, quote
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-rename-enum-value",
    summary="ALTER TYPE ... RENAME VALUE on an enum in use.",
    lock="none on tables; the hazard is compatibility",
    bad="ALTER TYPE order_state RENAME VALUE 'canceled' TO 'cancelled';",
    safe="ALTER TYPE order_state ADD VALUE IF NOT EXISTS 'cancelled';",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag RENAME VALUE of an enum type that existed before this file."""
    node = stmt.node
    if not isinstance(node, ast.AlterEnumStmt) or not node.oldVal:
        return []
    type_name = qualified(node.typeName)
    if type_name in ctx.types_created:
        return []
    old, new = node.oldVal, node.newVal or ""
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"RENAME VALUE {old!r} TO {new!r} of enum {quote(type_name)} breaks the code "
            "that is running",
            why=(
                f"The old version of the application still writes and compares {old!r}; once "
                f"the value is renamed its INSERTs and UPDATEs fail (invalid input value for "
                f"enum) and its reads stop matching, while the new version fails the same way "
                f"on {new!r} if it runs first."
            ),
            help=(
                "Add the new value, deploy code that writes it (and reads both), move the rows "  # noqa: S608 - help text, never executed
                "over in batches, and stop using the old value; an enum value cannot be "
                "dropped, so leave it unused (or move to a lookup table):\n"
                f"    ALTER TYPE {type_name} ADD VALUE IF NOT EXISTS '{new}';\n"
                "    -- migrate phase:\n"
                "    -- bluegreen:backfill\n"
                f"    UPDATE <table> SET <column> = '{new}' WHERE <column> = '{old}';"
            ),
            lock=None,
        )
    ]
