"""require-validate-in-separate-transaction: VALIDATE while the transaction holds a lock."""

from __future__ import annotations

from pglast.enums import AlterTableType

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.locks import blocks_text
from bluegreen.migrations.lint.nodes import (
    ident,
    quote,
    sql_block,
    table_sql,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-validate-in-separate-transaction",
    summary="VALIDATE CONSTRAINT in the same transaction as the NOT VALID add (or another "
    "blocking lock on the table).",
    lock="the earlier statement's lock (ACCESS EXCLUSIVE or SHARE ROW EXCLUSIVE), held for the "
    "whole validation scan",
    bad="ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) "
    "REFERENCES users (id) NOT VALID;\n"
    "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_id_fkey;",
    safe="ALTER TABLE orders VALIDATE CONSTRAINT orders_user_id_fkey;  -- its own migration",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag VALIDATE CONSTRAINT run while this transaction already blocks the table."""
    findings = []
    for _, table, cmd in ctx.existing_table_cmds(stmt.node, AlterTableType.AT_ValidateConstraint):
        name = cmd.name or ""
        added_line = ctx.tx.not_valid.get((table, name))
        fact = ctx.facts.constraints.get((table, name))
        already_valid = fact is not None and fact.validated and added_line is None
        held = [h for h in ctx.held_blocking_locks() if h.table == table]
        if added_line is None and (already_valid or not held):
            continue
        if added_line is not None:
            cause = f"the NOT VALID add at line {added_line}"
            mode = next(
                (h.mode for h in held if h.line == added_line), held[0].mode if held else ""
            )
        else:
            cause = f"line {held[0].line}"
            mode = held[0].mode
        blocked = blocks_text(mode) or "writes"
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"VALIDATE CONSTRAINT {quote(name)} runs in the same transaction as "
                f"{cause}, which holds {mode} on {quote(table)}",
                why=(
                    "Validation scans the whole table. On its own it takes only SHARE UPDATE "
                    "EXCLUSIVE and lets reads and writes go on; but the lock taken earlier in "
                    "this transaction is held until it commits, so "
                    f"{blocked} on {quote(table)} stay blocked for the whole scan: the very "
                    "thing NOT VALID was meant to avoid."
                ),
                help=(
                    "Commit in between: move the VALIDATE to the next migration (or, in a "
                    "plain SQL script, put a COMMIT before it):\n"
                    + sql_block(f"ALTER TABLE {table_sql(table)} VALIDATE CONSTRAINT {ident(name)}")
                ),
                lock=ctx.lock,
            )
        )
    return findings
