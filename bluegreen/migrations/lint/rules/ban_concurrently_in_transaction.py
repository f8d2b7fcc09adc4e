"""ban-concurrently-in-transaction: CONCURRENTLY inside BEGIN ... COMMIT fails."""

from __future__ import annotations

from pglast import ast

from bluegreen.migrations.lint.context import Context, is_concurrent
from bluegreen.migrations.lint.nodes import first_line
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-concurrently-in-transaction",
    summary="CREATE/DROP INDEX, REINDEX or DETACH PARTITION CONCURRENTLY inside an explicit "
    "transaction block.",
    lock="none taken: PostgreSQL refuses the statement",
    bad="BEGIN;\nCREATE INDEX CONCURRENTLY users_email_idx ON users (email);\nCOMMIT;",
    safe="CREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
)

_NAMES = {
    ast.IndexStmt: "CREATE INDEX CONCURRENTLY",
    ast.DropStmt: "DROP INDEX CONCURRENTLY",
    ast.ReindexStmt: "REINDEX CONCURRENTLY",
    ast.AlterTableStmt: "DETACH PARTITION CONCURRENTLY",
}


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a CONCURRENTLY statement inside an explicit BEGIN block."""
    if not ctx.in_explicit_transaction or not is_concurrent(stmt.node):
        return []
    what = _NAMES.get(type(stmt.node), first_line(stmt.text))
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"{what} inside the transaction block opened at line {ctx.tx.start_line}",
            why=(
                f"PostgreSQL refuses {what} inside a transaction block (ERROR: {what} cannot "
                "run inside a transaction block): the migration fails at this statement, and "
                "what ran before it in the block is rolled back."
            ),
            help=(
                "Remove the BEGIN/COMMIT around it, or move it to a migration of its own. "
                "bluegreen's runner runs CONCURRENTLY statements outside its transaction by "
                "itself; with other tools, disable their per-migration transaction "
                "(Rails: disable_ddl_transaction!, Django: atomic = False, Alembic: "
                "autocommit_block(), Flyway: executeInTransaction=false)."
            ),
            lock=None,
        )
    ]
