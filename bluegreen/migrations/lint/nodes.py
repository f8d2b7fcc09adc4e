"""Small readers over pglast parse trees, shared by the lock model and the rules.

Names are normalised the way PostgreSQL resolves them in a default
``search_path``: ``public.users`` and ``users`` are the same table, so the
schema is kept only when it is not ``public``. pglast already folds unquoted
identifiers to lower case.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pglast import ast, keywords
from pglast.enums import AlterTableType, ConstrType

DEFAULT_SCHEMAS: Final = frozenset({"public", "pg_catalog"})
# Keywords that cannot be bare column or table names (quote_ident's rule).
_NEEDS_QUOTES: Final = frozenset(
    keywords.RESERVED_KEYWORDS | keywords.TYPE_FUNC_NAME_KEYWORDS | keywords.COL_NAME_KEYWORDS
)

# Spellings PostgreSQL maps onto one internal type name.
_TYPE_ALIASES: Final = {
    "int": "int4",
    "integer": "int4",
    "int4": "int4",
    "bigint": "int8",
    "smallint": "int2",
    "serial4": "serial",
    "serial8": "bigserial",
    "serial2": "smallserial",
    "boolean": "bool",
    "real": "float4",
    "float": "float8",
    "double precision": "float8",
    "decimal": "numeric",
    "character varying": "varchar",
    "character": "bpchar",
    "char": "bpchar",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "time with time zone": "timetz",
    "time without time zone": "time",
    "bit varying": "varbit",
}


_DISPLAY_NAMES: Final = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "bpchar": "char",
}


def relation_name(rv: Any) -> str:
    """``schema.table`` of a RangeVar, without the schema when it is public."""
    if rv is None:
        return ""
    schema = getattr(rv, "schemaname", None)
    name = str(getattr(rv, "relname", "") or "")
    if schema and schema not in DEFAULT_SCHEMAS:
        return f"{schema}.{name}"
    return name


def strings(values: Any) -> list[str]:
    """The ``sval`` of each String node in a list (other nodes are skipped)."""
    if values is None:
        return []
    if isinstance(values, ast.String):
        return [values.sval or ""]
    return [v.sval or "" for v in values if isinstance(v, ast.String)]


def qualified(values: Any) -> str:
    """A dotted name from a list of String nodes, dropping a default schema."""
    parts = strings(values)
    if len(parts) > 1 and parts[0] in DEFAULT_SCHEMAS:
        parts = parts[1:]
    return ".".join(parts)


def quote(name: str) -> str:
    """An object name as messages show it: ``"users"``."""
    return f'"{name}"'


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """A column type reduced to what decides whether a change rewrites."""

    name: str  # internal name: int4, varchar, numeric, timestamptz, my_enum, ...
    mods: tuple[int, ...] = ()  # typmods as written: (20,) for varchar(20)
    array: bool = False

    def render(self) -> str:
        """The type as SQL (``varchar(20)``, ``bigint[]``)."""
        mods = f"({', '.join(str(m) for m in self.mods)})" if self.mods else ""
        name = _DISPLAY_NAMES.get(self.name, self.name)
        return f"{name}{mods}{'[]' if self.array else ''}"


def type_spec(type_name: Any) -> TypeSpec | None:
    """Normalise a pglast TypeName (``character varying(20)`` → ``varchar(20)``)."""
    if not isinstance(type_name, ast.TypeName):
        return None
    parts = strings(type_name.names)
    if not parts:
        return None
    name = parts[-1].lower()
    name = _TYPE_ALIASES.get(name, name)
    mods: list[int] = []
    for mod in type_name.typmods or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        if isinstance(value, int):
            mods.append(value)
    if name == "interval" and mods and mods[0] == 0x7FFF:
        mods = mods[1:]  # INTERVAL_FULL_RANGE: only the precision matters here
    return TypeSpec(name, tuple(mods), bool(type_name.arrayBounds))


def column_constraints(column: ast.ColumnDef) -> list[ast.Constraint]:
    """The inline constraints of a column definition."""
    return [c for c in column.constraints or () if isinstance(c, ast.Constraint)]


def column_default(column: ast.ColumnDef) -> Any:
    """The DEFAULT expression of a column definition, or None."""
    if column.raw_default is not None:
        return column.raw_default
    for constraint in column_constraints(column):
        if constraint.contype == ConstrType.CONSTR_DEFAULT:
            return constraint.raw_expr
    return None


def has_constraint(column: ast.ColumnDef, kind: ConstrType) -> bool:
    """Whether a column definition carries an inline constraint of ``kind``."""
    return any(c.contype == kind for c in column_constraints(column))


def column_not_null(column: ast.ColumnDef) -> bool:
    """Whether a column definition says NOT NULL (or PRIMARY KEY, which implies it)."""
    return bool(column.is_not_null) or any(
        c.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY)
        for c in column_constraints(column)
    )


def _slots(kind: type) -> tuple[str, ...]:
    return tuple(getattr(kind, "__slots__", ()))


def walk(node: Any) -> Iterator[Any]:
    """Every pglast node under ``node`` (itself included), depth first."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Node):
            yield current
            for slot in _slots(type(current)):
                value = getattr(current, slot, None)
                if isinstance(value, ast.Node | tuple | list):
                    stack.append(value)
        elif isinstance(current, tuple | list):
            stack.extend(reversed(current))


def function_names(expr: Any) -> list[str]:
    """Names of the functions an expression calls, lower case, without schema."""
    names = []
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            parts = strings(node.funcname)
            if parts:
                names.append(parts[-1].lower())
    return names


def column_refs(expr: Any) -> list[str]:
    """Column names an expression references (last part of each ColumnRef)."""
    found = []
    for node in walk(expr):
        if isinstance(node, ast.ColumnRef):
            parts = strings(node.fields)
            if parts:
                found.append(parts[-1])
    return found


def string_constants(expr: Any) -> list[str]:
    """String literals in an expression."""
    return [
        node.val.sval or ""
        for node in walk(expr)
        if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String)
    ]


def first_line(text: str) -> str:
    """The statement's first line, shortened for one-line displays."""
    line = text.strip().split("\n", 1)[0].strip()
    return line if len(line) <= 100 else line[:97] + "..."


def sequence_of(values: Sequence[Any] | None) -> Sequence[Any]:
    """``values`` or an empty tuple (pglast uses None for empty lists)."""
    return values if values is not None else ()


def deparse(node: Any) -> str:
    """SQL text of a parse tree (pglast's deparser), for help texts."""
    from pglast.stream import RawStream  # the deparser is only needed for help texts

    text: str = RawStream()(node)
    return text


def sql_block(*statements: str) -> str:
    """Statements as an indented block of a help text, each ending with ``;``.

    Lines starting with ``--`` are kept as comments.
    """
    lines = []
    for statement in statements:
        for line in statement.split("\n"):
            code, sep, comment = line.partition("  -- ")
            if line.lstrip().startswith("--") or code.endswith(";"):
                lines.append(f"    {line}")
            else:
                lines.append(f"    {code};{sep}{comment}")
    return "\n".join(lines)


_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")


def ident(name: str) -> str:
    """An identifier as SQL text, double-quoted when PostgreSQL needs it."""
    if _PLAIN_IDENTIFIER.match(name) and name not in _NEEDS_QUOTES:
        return name
    return '"' + name.replace('"', '""') + '"'


def table_sql(table: str) -> str:
    """A (possibly schema-qualified) table name as SQL text."""
    return ".".join(ident(part) for part in table.split("."))


def alter_cmds(node: Any, *subtypes: Any) -> list[ast.AlterTableCmd]:
    """The subcommands of an ALTER TABLE of the given kinds (all kinds when none given)."""
    if not isinstance(node, ast.AlterTableStmt):
        return []
    return [
        cmd
        for cmd in node.cmds or ()
        if isinstance(cmd, ast.AlterTableCmd) and (not subtypes or cmd.subtype in subtypes)
    ]


def deparse_alter(node: ast.AlterTableStmt, *cmds: ast.AlterTableCmd) -> str:
    """An ``ALTER TABLE`` of ``node``'s table with only ``cmds``, as SQL text."""
    import copy

    single = copy.copy(node)
    single.cmds = tuple(cmds)
    return deparse(single)


def column_without(column: ast.ColumnDef, *kinds: Any) -> ast.ColumnDef:
    """A copy of a column definition without its inline constraints of ``kinds``."""
    import copy

    trimmed = copy.copy(column)
    trimmed.constraints = tuple(c for c in column_constraints(column) if c.contype not in kinds)
    if ConstrType.CONSTR_DEFAULT in kinds:
        trimmed.raw_default = None
    if ConstrType.CONSTR_NOTNULL in kinds:
        trimmed.is_not_null = False
    return trimmed


def add_column_sql(node: ast.AlterTableStmt, column: ast.ColumnDef) -> str:
    """``ALTER TABLE t ADD COLUMN <column>`` as SQL text."""
    cmd = ast.AlterTableCmd(subtype=AlterTableType.AT_AddColumn, def_=column)
    return deparse_alter(node, cmd)


def add_not_valid_sql(node: ast.AlterTableStmt, constraint: ast.Constraint, name: str) -> str:
    """``ALTER TABLE t ADD CONSTRAINT <name> <constraint> NOT VALID`` as SQL text."""
    import copy

    not_valid = copy.copy(constraint)
    not_valid.skip_validation = True
    not_valid.initially_valid = False
    not_valid.conname = name
    cmd = ast.AlterTableCmd(subtype=AlterTableType.AT_AddConstraint, def_=not_valid)
    return deparse_alter(node, cmd)
