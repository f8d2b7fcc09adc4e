"""ban-enum-value-use-before-commit: using an enum value in the transaction that added it."""

from __future__ import annotations

from pglast import ast

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import quote, string_constants
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-enum-value-use-before-commit",
    summary="A value added with ALTER TYPE ... ADD VALUE is used before that transaction commits.",
    lock="none: PostgreSQL refuses the statement",
    bad="BEGIN;\nALTER TYPE order_status ADD VALUE 'refunded';\n"
    "UPDATE orders SET status = 'refunded' WHERE id = 42;\nCOMMIT;",
    safe="ALTER TYPE order_status ADD VALUE 'refunded';\n"
    "-- next migration:\nUPDATE orders SET status = 'refunded' WHERE id = 42;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a statement that uses an enum value added earlier in the same transaction."""
    if not ctx.tx.enum_values or isinstance(stmt.node, ast.AlterEnumStmt):
        return []
    used = [v for v in dict.fromkeys(string_constants(stmt.node)) if v in ctx.tx.enum_values]
    findings = []
    for value in used:
        type_name, line = ctx.tx.enum_values[value]
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"uses enum value {value!r} of {quote(type_name)}, added at line {line} "
                "in the same transaction",
                why=(
                    "A value added by ALTER TYPE ... ADD VALUE cannot be used until the "
                    "transaction that added it commits (ERROR: unsafe use of new value): the "
                    "migration fails here and everything before it in the transaction is "
                    "rolled back."
                ),
                help=(
                    "Commit between the two: put ALTER TYPE ... ADD VALUE in its own migration "
                    "(or before a COMMIT). bluegreen's runner does this by itself for migration "
                    "files; plain scripts and other tools run the file in one transaction."
                ),
                lock=None,
            )
        )
    return findings
