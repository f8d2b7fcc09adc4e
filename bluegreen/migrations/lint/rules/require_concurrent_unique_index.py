"""require-concurrent-unique-index: UNIQUE / PRIMARY KEY built in place under ACCESS EXCLUSIVE."""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType, ConstrType

from bluegreen.migrations.lint.context import Context, constraint_columns, default_constraint_name
from bluegreen.migrations.lint.nodes import (
    add_column_sql,
    column_constraints,
    column_without,
    ident,
    quote,
    sql_block,
    table_sql,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-concurrent-unique-index",
    summary="ADD UNIQUE / PRIMARY KEY / EXCLUDE (or ADD COLUMN ... UNIQUE) builds its index "
    "under ACCESS EXCLUSIVE.",
    lock="ACCESS EXCLUSIVE for the whole index build: reads and writes wait",
    bad="ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);",
    safe="CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);\n"
    "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;",
)

WHY = (
    "The constraint's index is built while the table is locked ACCESS EXCLUSIVE: reads and "
    "writes wait for the whole build, minutes on a large table."
)

_KINDS = {
    ConstrType.CONSTR_UNIQUE: "UNIQUE",
    ConstrType.CONSTR_PRIMARY: "PRIMARY KEY",
    ConstrType.CONSTR_EXCLUSION: "EXCLUDE",
}


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag unique, primary-key and exclusion constraints built in place on old tables."""
    findings = []
    for _, table, cmd in ctx.existing_table_cmds(stmt.node, AlterTableType.AT_AddConstraint):
        constraint = cmd.def_
        if (
            isinstance(constraint, ast.Constraint)
            and constraint.contype in _KINDS
            and not constraint.indexname
        ):
            columns = constraint_columns(constraint)
            findings.append(_finding(stmt, ctx, table, constraint, columns, node=None))
    for node, table, column in ctx.columns_added_to_existing_table(stmt.node):
        for constraint in column_constraints(column):
            if constraint.contype in _KINDS:
                findings.append(
                    _finding(
                        stmt, ctx, table, constraint, [column.colname or ""], node=(node, column)
                    )
                )
    return findings


def _finding(
    stmt: Statement,
    ctx: Context,
    table: str,
    constraint: ast.Constraint,
    columns: list[str],
    *,
    node: tuple[ast.AlterTableStmt, ast.ColumnDef] | None,
) -> Finding:
    kind = _KINDS.get(constraint.contype or ConstrType.CONSTR_NULL, "UNIQUE")
    name = constraint.conname or default_constraint_name(table, constraint, columns)
    t = table_sql(table)
    cols = ", ".join(ident(c) for c in columns)
    if constraint.contype == ConstrType.CONSTR_EXCLUSION:
        help_text = (
            "An exclusion constraint cannot be attached to an index built beforehand, so there "
            "is no lock-free way to add one to a table in use. If plain equality is enough, "
            "use a unique index built CONCURRENTLY instead; otherwise create the table with "
            "the constraint, or add it in a maintenance window."
        )
    else:
        steps = []
        if node is not None:
            steps.append(
                add_column_sql(
                    node[0],
                    column_without(node[1], ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY),
                )
            )
        steps += [
            "-- its own migration (CONCURRENTLY runs outside a transaction):",
            f"CREATE UNIQUE INDEX CONCURRENTLY {ident(name)} ON {t} ({cols})",
            "-- next migration (instant: the index exists):",
            f"ALTER TABLE {t} ADD CONSTRAINT {ident(name)} {kind} USING INDEX {ident(name)}",
        ]
        help_text = (
            "Build the unique index concurrently (reads and writes go on), then attach it as "
            "the constraint, which only takes a brief lock:\n" + sql_block(*steps)
        )
        if constraint.contype == ConstrType.CONSTR_PRIMARY:
            help_text += (
                "\nPRIMARY KEY also makes the columns NOT NULL: if they are not already, that "
                "is a SET NOT NULL with a full scan under ACCESS EXCLUSIVE. Make them NOT NULL "
                "first with a validated CHECK (`bluegreen migrate new set-not-null`)."
            )
    where = (
        f"ADD COLUMN {quote(columns[0])} {kind}"
        if node is not None
        else (f"ADD CONSTRAINT {quote(name)} {kind}")
    )
    return RULE.finding(
        stmt,
        ctx.path,
        message=f"{where} on {quote(table)} builds its index under ACCESS EXCLUSIVE",
        why=WHY,
        help=help_text,
        lock=ctx.lock,
    )
