"""require-not-valid-check: ADD CONSTRAINT ... CHECK without NOT VALID scans under lock."""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType, ConstrType

from bluegreen.migrations.lint.context import Context, constraint_columns, default_constraint_name
from bluegreen.migrations.lint.nodes import (
    add_column_sql,
    add_not_valid_sql,
    column_constraints,
    column_without,
    deparse,
    ident,
    qualified,
    quote,
    sql_block,
    table_sql,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-not-valid-check",
    summary="ADD CONSTRAINT ... CHECK (or a CHECK on an added column, or ALTER DOMAIN ADD "
    "CONSTRAINT) without NOT VALID scans the table under lock.",
    lock="ACCESS EXCLUSIVE for the whole validation scan: reads and writes wait",
    bad="ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total >= 0);",
    safe="ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total >= 0) NOT VALID;\n"
    "-- next migration:\nALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;",
)

WHY = (
    "PostgreSQL checks every existing row before the constraint is added, while it holds "
    "ACCESS EXCLUSIVE on the table: reads and writes wait for the whole scan."
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag CHECK constraints validated in place on tables that existed before this file."""
    node = stmt.node
    if isinstance(node, ast.AlterDomainStmt):
        return _domain(stmt, node, ctx)
    findings = []
    for alter, table, cmd in ctx.existing_table_cmds(node, AlterTableType.AT_AddConstraint):
        constraint = cmd.def_
        if (
            not isinstance(constraint, ast.Constraint)
            or constraint.contype != ConstrType.CONSTR_CHECK
            or constraint.skip_validation
        ):
            continue
        name = constraint.conname or default_constraint_name(
            table, constraint, constraint_columns(constraint)
        )
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"ADD CONSTRAINT {quote(name)} CHECK on {quote(table)} scans the table "
                "under ACCESS EXCLUSIVE",
                why=WHY,
                help=_help(add_not_valid_sql(alter, constraint, name), table_sql(table), name),
                lock=ctx.lock,
            )
        )
    for alter, table, column in ctx.columns_added_to_existing_table(node):
        checks = [c for c in column_constraints(column) if c.contype == ConstrType.CONSTR_CHECK]
        if not checks:
            continue
        col = column.colname or ""
        t = table_sql(table)
        name = checks[0].conname or default_constraint_name(table, checks[0], [col])
        add = add_column_sql(alter, column_without(column, ConstrType.CONSTR_CHECK))
        constraint_sql = (
            f"ALTER TABLE {t} ADD CONSTRAINT {ident(name)} CHECK ({deparse(checks[0].raw_expr)}) "
            "NOT VALID"
        )
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"ADD COLUMN {quote(col)} with a CHECK on {quote(table)} scans the "
                "table under ACCESS EXCLUSIVE",
                why=WHY,
                help=_help(f"{add};\n{constraint_sql}", t, name, column=True),
                lock=ctx.lock,
            )
        )
    return findings


def _help(add: str, table: str, name: str, *, column: bool = False) -> str:
    first = "Add the column, then the CHECK" if column else "Add the CHECK"
    return (
        f"{first} NOT VALID (a brief lock; new and updated rows are checked from now on), and "
        "validate the existing rows in a later migration, in its own transaction: VALIDATE "
        "takes SHARE UPDATE EXCLUSIVE, so reads and writes go on during the scan:\n"
        + sql_block(
            add,
            "-- next migration:",
            f"ALTER TABLE {table} VALIDATE CONSTRAINT {ident(name)}",
        )
    )


def _domain(stmt: Statement, node: ast.AlterDomainStmt, ctx: Context) -> list[Finding]:
    constraint = node.def_
    if (
        node.subtype != "C"
        or not isinstance(constraint, ast.Constraint)
        or constraint.contype != ConstrType.CONSTR_CHECK
        or constraint.skip_validation
    ):
        return []
    domain = qualified(node.typeName)
    name = constraint.conname or f"{domain.split('.')[-1]}_check"
    return [
        RULE.finding(
            stmt,
            ctx.path,
            message=f"ALTER DOMAIN {quote(domain)} ADD CONSTRAINT {quote(name)} checks every "
            "column of that domain under lock",
            why=(
                "PostgreSQL checks every row of every table that has a column of this domain, "
                "holding a SHARE lock on each: writes to all of them wait for the scans."
            ),
            help=(
                "Add it NOT VALID, and validate it in a later migration:\n"
                + sql_block(
                    f"ALTER DOMAIN {domain} ADD CONSTRAINT {ident(name)} "
                    f"CHECK ({deparse(constraint.raw_expr)}) NOT VALID",
                    "-- next migration:",
                    f"ALTER DOMAIN {domain} VALIDATE CONSTRAINT {ident(name)}",
                )
            ),
            lock=ctx.lock,
        )
    ]
