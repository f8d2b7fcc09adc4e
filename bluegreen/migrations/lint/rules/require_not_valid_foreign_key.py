"""require-not-valid-foreign-key: ADD FOREIGN KEY without NOT VALID scans under lock."""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType, ConstrType

from bluegreen.migrations.lint.context import Context, constraint_columns, default_constraint_name
from bluegreen.migrations.lint.nodes import (
    add_not_valid_sql,
    ident,
    quote,
    relation_name,
    sql_block,
    table_sql,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-not-valid-foreign-key",
    summary="ADD CONSTRAINT ... FOREIGN KEY without NOT VALID checks every row while blocking "
    "writes on both tables.",
    lock="SHARE ROW EXCLUSIVE on both tables for the whole validation scan: writes wait",
    bad="ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) "
    "REFERENCES users (id);",
    safe="ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) "
    "REFERENCES users (id) NOT VALID;\n"
    "-- next migration:\nALTER TABLE orders VALIDATE CONSTRAINT orders_user_id_fkey;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag a validated FOREIGN KEY added to a table that existed before this file."""
    findings = []
    for node, table, cmd in ctx.existing_table_cmds(stmt.node, AlterTableType.AT_AddConstraint):
        key = cmd.def_
        if (
            not isinstance(key, ast.Constraint)
            or key.contype != ConstrType.CONSTR_FOREIGN
            or key.skip_validation
        ):
            continue
        referenced = relation_name(key.pktable)
        name = key.conname or default_constraint_name(table, key, constraint_columns(key))
        help_text = (
            "Add it NOT VALID (a brief lock; new and updated rows are checked from now on), "
            "then validate the existing rows in a later migration, in its own transaction: "
            f"VALIDATE takes SHARE UPDATE EXCLUSIVE on {quote(table)} and ROW SHARE on "
            f"{quote(referenced)}, so reads and writes go on during the scan:\n"
            + sql_block(
                add_not_valid_sql(node, key, name),
                "-- next migration:",
                f"ALTER TABLE {table_sql(table)} VALIDATE CONSTRAINT {ident(name)}",
            )
        )
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"ADD FOREIGN KEY {quote(name)} on {quote(table)} validates every row "
                f"while blocking writes to {quote(table)} and {quote(referenced)}",
                why=(
                    "Adding a foreign key takes SHARE ROW EXCLUSIVE on both tables and then "
                    f"checks every existing row of {quote(table)} against {quote(referenced)} "
                    "before it commits: INSERT, UPDATE and DELETE on both tables wait for the "
                    "whole scan."
                ),
                help=help_text,
                lock=ctx.lock,
            )
        )
    return findings
