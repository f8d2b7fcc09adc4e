"""ban-vacuum-full: VACUUM FULL rewrites the table under ACCESS EXCLUSIVE."""

from __future__ import annotations

from pglast import ast

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.nodes import quote, relation_name
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-vacuum-full",
    summary="VACUUM FULL rewrites the table under ACCESS EXCLUSIVE.",
    lock="ACCESS EXCLUSIVE for the whole rewrite: reads and writes wait",
    bad="VACUUM FULL orders;",
    safe="VACUUM (ANALYZE) orders;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag VACUUM FULL."""
    node = stmt.node
    if not isinstance(node, ast.VacuumStmt) or not node.is_vacuumcmd:
        return []
    if not any(getattr(o, "defname", "") == "full" for o in node.options or ()):
        return []
    tables = [relation_name(r.relation) for r in node.rels or () if hasattr(r, "relation")]
    if tables and all(ctx.is_new(t) for t in tables):
        return []
    what = ", ".join(quote(t) for t in tables) if tables else "every table of the database"
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"VACUUM FULL of {what} rewrites it under ACCESS EXCLUSIVE",
            why=(
                "VACUUM FULL copies the whole table into a new file and rebuilds its indexes "
                "while holding ACCESS EXCLUSIVE: reads and writes wait until it is done. It "
                "also needs free disk space for a full copy."
            ),
            help=(
                "Use plain VACUUM (it takes SHARE UPDATE EXCLUSIVE; reads and writes go on), "
                "which makes the space reusable. To give space back to the operating system "
                "online, use an extension that rebuilds with a brief lock (pg_repack, "
                "pg_squeeze) outside the migration."
            ),
            lock=ctx.lock,
        )
    ]
