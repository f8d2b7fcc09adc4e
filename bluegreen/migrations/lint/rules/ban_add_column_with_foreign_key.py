"""ban-add-column-with-foreign-key: ADD COLUMN ... REFERENCES validates under lock."""

from __future__ import annotations

from pglast.enums import ConstrType

from bluegreen.migrations.lint.context import Context, default_constraint_name
from bluegreen.migrations.lint.nodes import (
    add_column_sql,
    column_constraints,
    column_default,
    column_without,
    ident,
    quote,
    relation_name,
    sql_block,
    strings,
    table_sql,
)
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-add-column-with-foreign-key",
    summary="ADD COLUMN ... REFERENCES locks the table and the referenced table in one step.",
    lock="ACCESS EXCLUSIVE on the table and SHARE ROW EXCLUSIVE on the referenced table at once "
    "(and a full scan when the column has a DEFAULT)",
    bad="ALTER TABLE orders ADD COLUMN user_id bigint REFERENCES users (id);",
    safe="ALTER TABLE orders ADD COLUMN user_id bigint;\n"
    "ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) "
    "REFERENCES users (id) NOT VALID;",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag ADD COLUMN with an inline REFERENCES on a table that existed before this file."""
    findings = []
    for node, table, column in ctx.columns_added_to_existing_table(stmt.node):
        keys = [c for c in column_constraints(column) if c.contype == ConstrType.CONSTR_FOREIGN]
        if not keys:
            continue
        key = keys[0]
        col = column.colname or ""
        referenced = relation_name(key.pktable)
        name = key.conname or default_constraint_name(table, key, [col])
        t = table_sql(table)
        target = f"{table_sql(referenced)}"
        pk = ", ".join(ident(c) for c in strings(key.pk_attrs))
        if pk:
            target += f" ({pk})"
        bare = column_without(column, ConstrType.CONSTR_FOREIGN)
        help_text = (
            "Add the column on its own, then the foreign key NOT VALID (each step locks one "
            "thing briefly; new rows are checked from then on), and validate it in a later "
            "migration, where it takes only SHARE UPDATE EXCLUSIVE and lets reads and writes "
            "go on:\n"
            + sql_block(
                add_column_sql(node, bare),
                f"ALTER TABLE {t} ADD CONSTRAINT {ident(name)} FOREIGN KEY ({ident(col)}) "
                f"REFERENCES {target} NOT VALID",
                "-- next migration:",
                f"ALTER TABLE {t} VALIDATE CONSTRAINT {ident(name)}",
            )
            + "\nIndex the column with CREATE INDEX CONCURRENTLY if you join or delete "
            "through it."
        )
        has_default = column_default(column) is not None
        if has_default:
            why = (
                f"The column gets its DEFAULT in every row, so the key is validated by scanning "
                f"the whole table while {quote(table)} is locked ACCESS EXCLUSIVE (reads and "
                f"writes wait) and {quote(referenced)} SHARE ROW EXCLUSIVE (writes wait)."
            )
        else:
            why = (
                f"One statement takes ACCESS EXCLUSIVE on {quote(table)} and SHARE ROW "
                f"EXCLUSIVE on {quote(referenced)}, usually a busy table: while it waits for "
                f"the second lock (behind any long query on {quote(referenced)}) it already "
                f"holds the first, so reads and writes of {quote(table)} queue up, and writes "
                f"of {quote(referenced)} queue behind it. (A new column without a DEFAULT is "
                "all NULL, so PostgreSQL does not scan it to validate the key.)"
            )
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"ADD COLUMN {quote(col)} REFERENCES {quote(referenced)} on "
                f"{quote(table)} locks both tables in one step"
                + (" and validates every row" if has_default else ""),
                why=why,
                help=help_text,
                lock=ctx.lock,
            )
        )
    return findings
