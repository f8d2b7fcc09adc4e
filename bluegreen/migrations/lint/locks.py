"""Which table lock a statement takes in PostgreSQL 15, and whether it rewrites.

Theory of operation. PostgreSQL has eight table lock modes; each statement
takes one of them on every table it touches and holds it to the end of the
transaction. What matters for zero downtime is what the application's own
statements then wait for:

=========================  =======================================  ==============
mode                       taken by (examples)                      blocks
=========================  =======================================  ==============
ACCESS SHARE               SELECT                                   (only DDL)
ROW SHARE                  SELECT ... FOR UPDATE/SHARE              (only DDL)
ROW EXCLUSIVE              INSERT, UPDATE, DELETE, MERGE            (only DDL)
SHARE UPDATE EXCLUSIVE     VACUUM, ANALYZE, CREATE INDEX            (only DDL)
                           CONCURRENTLY, VALIDATE CONSTRAINT
SHARE                      CREATE INDEX                             writes
SHARE ROW EXCLUSIVE        CREATE TRIGGER, ADD FOREIGN KEY          writes
EXCLUSIVE                  REFRESH MATERIALIZED VIEW CONCURRENTLY   writes
ACCESS EXCLUSIVE           most ALTER TABLE forms, DROP, TRUNCATE,  reads and writes
                           VACUUM FULL, CLUSTER, REINDEX
=========================  =======================================  ==============

An ALTER TABLE takes the strongest lock of its subcommands; the table is in
``AlterTableGetLockLevel`` (src/backend/commands/tablecmds.c) and the
storage-parameter levels in src/backend/access/common/reloptions.c. A
statement that also *rewrites* the table (copies every row into a new file) or
*scans* it (to validate a constraint or build an index) holds that lock for as
long as the table is large, instead of for a catalog update's milliseconds.
Even a brief ACCESS EXCLUSIVE lock queues behind every running query on the
table, and every later query queues behind it; the runner's ``lock_timeout``
bounds that wait, which is why brief locks are not findings on their own.

:func:`lock_for` answers for any parsed statement. It needs no database; what
it cannot know without one (the old type of a column, whether a function is
volatile) it takes from an optional :class:`SchemaView` (the linter's context
built from earlier statements), and otherwise assumes the common case, said
so in :attr:`LockInfo.note`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType, ReindexObjectType

from bluegreen.migrations.lint.nodes import (
    DEFAULT_SCHEMAS,
    TypeSpec,
    column_constraints,
    column_default,
    function_names,
    qualified,
    relation_name,
    strings,
    type_spec,
)

NONE: Final = "none"
UNKNOWN: Final = "unknown"
ACCESS_SHARE: Final = "ACCESS SHARE"
ROW_SHARE: Final = "ROW SHARE"
ROW_EXCLUSIVE: Final = "ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE: Final = "SHARE UPDATE EXCLUSIVE"
SHARE: Final = "SHARE"
SHARE_ROW_EXCLUSIVE: Final = "SHARE ROW EXCLUSIVE"
EXCLUSIVE: Final = "EXCLUSIVE"
ACCESS_EXCLUSIVE: Final = "ACCESS EXCLUSIVE"

# Weakest first; index = strength. "unknown" ranks with "none": a DO block may
# take any lock, and guessing would only add noise to `migrate plan`.
MODES: Final = (
    NONE,
    ACCESS_SHARE,
    ROW_SHARE,
    ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    EXCLUSIVE,
    ACCESS_EXCLUSIVE,
)
_STRENGTH: Final = {mode: rank for rank, mode in enumerate(MODES)} | {UNKNOWN: 0}
_BLOCKS_WRITES: Final = frozenset({SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE})

# LOCK TABLE ... IN <mode> MODE: pglast gives the lmgr number (1..8).
_LOCK_STMT_MODES: Final = dict(enumerate(MODES))


def strongest(modes: Iterable[str]) -> str:
    """The strongest of several lock modes (``none`` for none)."""
    return max(modes, key=lambda m: _STRENGTH.get(m, 0), default=NONE)


def blocks_reads(mode: str) -> bool:
    """Whether plain SELECTs on the table wait while ``mode`` is held."""
    return mode == ACCESS_EXCLUSIVE


def blocks_writes(mode: str) -> bool:
    """Whether INSERT/UPDATE/DELETE on the table wait while ``mode`` is held."""
    return mode in _BLOCKS_WRITES


def blocks_text(mode: str) -> str:
    """``"reads and writes"``, ``"writes"`` or ``""`` for a lock mode."""
    if blocks_reads(mode):
        return "reads and writes"
    if blocks_writes(mode):
        return "writes"
    return ""


@dataclass(frozen=True, slots=True)
class LockInfo:
    """The lock a statement takes and what it does to the table while holding it.

    ``mode`` is the strongest table lock the statement takes; ``tables`` every
    table (or index, for index statements) it locks. ``rewrites``: every row is
    copied into a new file under the lock. ``scans``: the whole table is read
    under the lock (constraint validation, index build). ``note`` explains
    anything that is not obvious (a second table, an assumption).
    """

    mode: str
    blocks_reads: bool
    blocks_writes: bool
    rewrites: bool
    tables: tuple[str, ...]
    scans: bool = False
    note: str = ""

    @property
    def blocks(self) -> str:
        """What application statements wait for: "reads and writes", "writes" or ""."""
        if self.blocks_reads:
            return "reads and writes"
        if self.blocks_writes:
            return "writes"
        return ""


def make_lock(
    mode: str,
    tables: Iterable[str] = (),
    *,
    rewrites: bool = False,
    scans: bool = False,
    note: str = "",
) -> LockInfo:
    """A :class:`LockInfo` whose ``blocks_*`` fields follow from ``mode``."""
    unique = tuple(dict.fromkeys(t for t in tables if t))
    return LockInfo(
        mode=mode,
        blocks_reads=blocks_reads(mode),
        blocks_writes=blocks_writes(mode),
        rewrites=rewrites,
        tables=unique,
        scans=scans or rewrites,
        note=note,
    )


NO_LOCK: Final = make_lock(NONE)


class SchemaView(Protocol):
    """What the linter knows about the schema from earlier statements."""

    def column_type(self, table: str, column: str) -> TypeSpec | None:
        """The declared type of ``table.column``, if a linted statement created it."""

    def function_volatility(self, name: str) -> str | None:
        """``"i"``/``"s"``/``"v"`` for a function a linted statement created, else None."""

    def has_not_null_check(self, table: str, column: str) -> bool:
        """Whether a validated ``CHECK (column IS NOT NULL)`` on the table is known."""


# --- volatility of DEFAULT expressions -------------------------------------

# Built-ins that are VOLATILE: a DEFAULT calling one is evaluated per row, so
# ADD COLUMN must rewrite the table to store a value in every existing row.
VOLATILE_FUNCTIONS: Final = frozenset(
    {
        "random",
        "random_normal",
        "setseed",
        "clock_timestamp",
        "timeofday",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "gen_random_bytes",
        "nextval",
        "currval",
        "lastval",
        "setval",
        "txid_current",
        "pg_current_xact_id",
    }
)

# Built-ins that are IMMUTABLE or STABLE and commonly appear in defaults. A
# non-volatile default is evaluated once and stored in the catalog (PG 11+).
NON_VOLATILE_FUNCTIONS: Final = frozenset(
    {
        "now",
        "transaction_timestamp",
        "statement_timestamp",
        "timezone",
        "date_trunc",
        "date_part",
        "extract",
        "make_date",
        "make_time",
        "make_timestamp",
        "make_timestamptz",
        "make_interval",
        "to_timestamp",
        "to_date",
        "to_char",
        "to_number",
        "age",
        "lower",
        "upper",
        "btrim",
        "ltrim",
        "rtrim",
        "trim",
        "concat",
        "concat_ws",
        "format",
        "substring",
        "substr",
        "replace",
        "left",
        "right",
        "length",
        "lpad",
        "rpad",
        "repeat",
        "md5",
        "sha256",
        "encode",
        "decode",
        "coalesce",
        "nullif",
        "greatest",
        "least",
        "abs",
        "round",
        "floor",
        "ceil",
        "jsonb_build_object",
        "jsonb_build_array",
        "json_build_object",
        "json_build_array",
        "to_json",
        "to_jsonb",
        "jsonb_object",
        "json_object",
        "array_fill",
        "string_to_array",
        "current_setting",
        "current_database",
        "current_schema",
        "uuid_nil",
        "uuid_generate_v3",
        "uuid_generate_v5",
        "int4range",
        "int8range",
        "numrange",
        "daterange",
        "tsrange",
        "tstzrange",
        "point",
        "to_tsvector",
        "setweight",
        "bool",
        "int4",
        "int8",
        "float8",
        "numeric",
        "text",
        "date",
    }
)


def default_volatility(expr: Any, schema: SchemaView | None = None) -> tuple[bool, str]:
    """Whether a DEFAULT expression is volatile, and the function that makes it so.

    Functions the linter does not know count as volatile: PostgreSQL makes a
    user-defined function VOLATILE unless it is declared otherwise (a
    ``CREATE FUNCTION ... IMMUTABLE`` earlier in the linted SQL is honoured).
    """
    for name in function_names(expr):
        if name in VOLATILE_FUNCTIONS:
            return True, name
        if name in NON_VOLATILE_FUNCTIONS:
            continue
        declared = schema.function_volatility(name) if schema is not None else None
        if declared in ("i", "s"):
            continue
        return True, name
    return False, ""


# --- type changes -----------------------------------------------------------

SERIAL_TYPES: Final = frozenset({"serial", "bigserial", "smallserial"})

# ALTER COLUMN TYPE skips the rewrite when the old type is binary-coercible to
# the new one and the length/precision check cannot fail (tablecmds.c,
# ATColumnChangeRequiresRewrite, plus the typmod "support" functions of
# varchar, numeric, varbit and the datetime types).
_BINARY_COERCIBLE: Final = frozenset(
    {
        ("varchar", "text"),
        ("text", "varchar"),
        ("varchar", "varchar"),
        ("text", "citext"),
        ("citext", "text"),
        ("varchar", "citext"),
        ("cidr", "inet"),
        ("xml", "text"),
        ("bit", "varbit"),
    }
)
_PRECISION_TYPES: Final = frozenset({"timestamp", "timestamptz", "time", "interval"})
# With an unknown old type, a change to one of these is taken as the usual
# widening (varchar(50) -> varchar(200) or text, numeric(10,2) -> numeric(12,2)).
_WIDENING_TARGETS: Final = frozenset({"text", "varchar", "numeric", "varbit", "citext"})


@dataclass(frozen=True, slots=True)
class TypeChange:
    """What ``ALTER COLUMN ... TYPE`` does to the table."""

    rewrites: bool
    reason: str  # why (or why not), for messages and `migrate plan`
    known_old: bool  # whether the old type came from linted SQL


def _typmod_widens(old: TypeSpec, new: TypeSpec) -> bool:
    if not new.mods:
        return True  # unconstrained: no check needed
    if not old.mods:
        return False  # adding a limit: every row must be checked
    if old.name == "numeric":
        old_scale = old.mods[1] if len(old.mods) > 1 else 0
        new_scale = new.mods[1] if len(new.mods) > 1 else 0
        return new_scale == old_scale and new.mods[0] >= old.mods[0]
    return new.mods[0] >= old.mods[0]


def using_converts(column: str, using: Any, new: TypeSpec) -> bool:
    """Whether ``USING <expr>`` does more than the plain cast to the new type.

    ``USING col`` and ``USING col::<new type>`` (what Django and others write)
    are the cast ALTER COLUMN TYPE does anyway; anything else converts every row.
    """
    if using is None:
        return False
    expr = using
    while isinstance(expr, ast.TypeCast) and type_spec(expr.typeName) == new:
        expr = expr.arg
    if isinstance(expr, ast.ColumnRef):
        parts = strings(expr.fields)
        return not parts or parts[-1] != column
    return True


def type_change(
    old: TypeSpec | None, new: TypeSpec, *, using: bool, cast: bool = False
) -> TypeChange:
    """Whether changing a column from ``old`` (None: unknown) to ``new`` rewrites.

    ``using``: a USING expression converts the values. ``cast``: the USING is
    just ``col::<new type>``; with the old type unknown that still says the type
    family changes (tools such as Django write it only then, e.g. integer to
    bigint), so only a change to unlimited text is taken as free.
    """
    if using:
        return TypeChange(True, "a USING expression converts every row", old is not None)
    if new.name in SERIAL_TYPES:
        return TypeChange(True, f"{new.name} is not a real type", old is not None)
    if old is None and cast:
        if new.name in ("text", "citext") or (new.name == "varchar" and not new.mods):
            return TypeChange(False, f"assumed a varchar -> {new.render()} change", False)
        return TypeChange(
            True, f"USING ...::{new.render()} converts every row to the new type", False
        )
    if old is None:
        if new.name in _WIDENING_TARGETS and not new.array:
            return TypeChange(
                False,
                f"assumed a widening change to {new.render()} (old type not in the linted SQL)",
                False,
            )
        if new.name in ("timestamptz", "timestamp"):
            return TypeChange(
                True,
                "timestamp <-> timestamptz rewrites unless the session TimeZone is UTC",
                False,
            )
        return TypeChange(True, f"converting to {new.render()} rewrites the table", False)
    if old.array != new.array:
        return TypeChange(True, f"{old.render()} -> {new.render()} converts every row", True)
    if old == new:
        return TypeChange(False, "the type does not change", True)
    if old.name == new.name:
        if old.name in ("varchar", "numeric", "varbit") or old.name in _PRECISION_TYPES:
            if _typmod_widens(old, new):
                return TypeChange(False, f"{old.render()} -> {new.render()} widens", True)
            return TypeChange(True, f"{old.render()} -> {new.render()} must check every row", True)
        return TypeChange(True, f"{old.render()} -> {new.render()} rewrites the table", True)
    if {old.name, new.name} == {"timestamp", "timestamptz"} and old.mods == new.mods:
        return TypeChange(
            True,
            f"{old.render()} -> {new.render()} rewrites unless the session TimeZone is UTC",
            True,
        )
    if (old.name, new.name) in _BINARY_COERCIBLE:
        if new.name == "varchar" and new.mods:
            return TypeChange(True, f"{old.render()} -> {new.render()} must check every row", True)
        return TypeChange(False, f"{old.render()} -> {new.render()} is binary-coercible", True)
    return TypeChange(True, f"{old.render()} -> {new.render()} rewrites the table", True)


# --- ALTER TABLE ------------------------------------------------------------

_AT: Final = AlterTableType
_SHARE_UPDATE_EXCLUSIVE_CMDS: Final = frozenset(
    {
        _AT.AT_SetStatistics,
        _AT.AT_ClusterOn,
        _AT.AT_DropCluster,
        _AT.AT_SetOptions,
        _AT.AT_ResetOptions,
        _AT.AT_ValidateConstraint,
        _AT.AT_AttachPartition,
        _AT.AT_DetachPartitionFinalize,
        _AT.AT_ReAddStatistics,
    }
)
_SHARE_ROW_EXCLUSIVE_CMDS: Final = frozenset(
    {
        _AT.AT_EnableTrig,
        _AT.AT_EnableAlwaysTrig,
        _AT.AT_EnableReplicaTrig,
        _AT.AT_EnableTrigAll,
        _AT.AT_EnableTrigUser,
        _AT.AT_DisableTrig,
        _AT.AT_DisableTrigAll,
        _AT.AT_DisableTrigUser,
    }
)
_REWRITING_CMDS: Final = {
    _AT.AT_SetTableSpace: "SET TABLESPACE copies the table to the new tablespace",
    _AT.AT_SetAccessMethod: "SET ACCESS METHOD rewrites the table",
    _AT.AT_SetLogged: "SET LOGGED rewrites the table into the WAL",
    _AT.AT_SetUnLogged: "SET UNLOGGED rewrites the table",
    _AT.AT_SetExpression: "SET EXPRESSION recomputes the column in every row",
}
# Storage parameters that need ACCESS EXCLUSIVE; every other one takes
# SHARE UPDATE EXCLUSIVE (reloptions.c).
_ACCESS_EXCLUSIVE_RELOPTIONS: Final = frozenset(
    {
        "autosummarize",
        "user_catalog_table",
        "fastupdate",
        "security_barrier",
        "security_invoker",
        "pages_per_range",
        "gin_pending_list_limit",
        "buffering",
        "check_option",
    }
)


@dataclass(frozen=True, slots=True)
class _Part:
    mode: str
    rewrites: bool = False
    scans: bool = False
    tables: tuple[str, ...] = ()
    note: str = ""


def _reloptions_mode(options: Any) -> str:
    names = [getattr(o, "defname", "") or "" for o in options or ()]
    if any(n.split(".")[-1] in _ACCESS_EXCLUSIVE_RELOPTIONS for n in names):
        return ACCESS_EXCLUSIVE
    return SHARE_UPDATE_EXCLUSIVE


def add_column_rewrite(column: ast.ColumnDef, schema: SchemaView | None = None) -> str:
    """Why ADD COLUMN rewrites the table ("" when it does not)."""
    spec = type_spec(column.typeName)
    if spec is not None and spec.name in SERIAL_TYPES:
        return f"{spec.name} fills every existing row from a sequence"
    for constraint in column_constraints(column):
        if constraint.contype == ConstrType.CONSTR_IDENTITY:
            return "an identity column fills every existing row from a sequence"
        if constraint.contype == ConstrType.CONSTR_GENERATED and constraint.generated_kind == "s":
            return "a stored generated column is computed and written for every row"
    default = column_default(column)
    if default is not None:
        volatile, name = default_volatility(default, schema)
        if volatile:
            return f"the default calls {name}(), which is volatile: every row gets its own value"
    return ""


def _constraint_part(
    table: str, constraint: ast.Constraint, *, in_column: bool, column_default: bool = False
) -> _Part:
    kind = constraint.contype
    if kind == ConstrType.CONSTR_FOREIGN:
        referenced = relation_name(constraint.pktable)
        # A new column without a default is all NULL: PostgreSQL adds its inline
        # REFERENCES as valid without checking a row (measured: 1 ms on 3M rows).
        validates = column_default if in_column else not constraint.skip_validation
        return _Part(
            SHARE_ROW_EXCLUSIVE,
            scans=validates,
            tables=(table, referenced),
            note=f"SHARE ROW EXCLUSIVE also on the referenced table {referenced!r}"
            + ("; every row is checked against it" if validates else ""),
        )
    if kind in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_EXCLUSION):
        if constraint.indexname:
            return _Part(ACCESS_EXCLUSIVE, tables=(table,), note="uses an existing index")
        return _Part(ACCESS_EXCLUSIVE, scans=True, tables=(table,), note="builds an index")
    if kind == ConstrType.CONSTR_CHECK:
        validates = in_column or not constraint.skip_validation
        return _Part(ACCESS_EXCLUSIVE, scans=validates, tables=(table,))
    return _Part(ACCESS_EXCLUSIVE, tables=(table,))


def _alter_table_cmd(
    table: str, cmd: ast.AlterTableCmd, schema: SchemaView | None, objtype: Any
) -> _Part:
    sub = cmd.subtype
    if sub == _AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        column = cmd.def_
        why = add_column_rewrite(column, schema)
        parts = [_Part(ACCESS_EXCLUSIVE, rewrites=bool(why), tables=(table,), note=why)]
        for constraint in column_constraints(column):
            if constraint.contype in (
                ConstrType.CONSTR_FOREIGN,
                ConstrType.CONSTR_PRIMARY,
                ConstrType.CONSTR_UNIQUE,
                ConstrType.CONSTR_CHECK,
            ):
                parts.append(
                    _constraint_part(
                        table,
                        constraint,
                        in_column=True,
                        column_default=column_default(column) is not None,
                    )
                )
        return _combine_parts(parts)
    if sub == _AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
        new = type_spec(cmd.def_.typeName)
        old = schema.column_type(table, cmd.name or "") if schema is not None else None
        if new is None:
            return _Part(ACCESS_EXCLUSIVE, rewrites=True, tables=(table,))
        using = using_converts(cmd.name or "", cmd.def_.raw_default, new)
        cast = cmd.def_.raw_default is not None and not using
        change = type_change(old, new, using=using, cast=cast)
        return _Part(
            ACCESS_EXCLUSIVE, rewrites=change.rewrites, tables=(table,), note=change.reason
        )
    if sub in (_AT.AT_AddConstraint, _AT.AT_ReAddConstraint) and isinstance(
        cmd.def_, ast.Constraint
    ):
        return _constraint_part(table, cmd.def_, in_column=False)
    if sub == _AT.AT_SetNotNull:
        if schema is not None and schema.has_not_null_check(table, cmd.name or ""):
            return _Part(
                ACCESS_EXCLUSIVE, tables=(table,), note="a validated CHECK proves it: no scan"
            )
        return _Part(
            ACCESS_EXCLUSIVE,
            scans=True,
            tables=(table,),
            note="scans the table unless a validated CHECK (col IS NOT NULL) exists",
        )
    if sub in _REWRITING_CMDS:
        if objtype == ObjectType.OBJECT_INDEX:
            return _Part(
                ACCESS_EXCLUSIVE, rewrites=True, tables=(table,), note="rebuilds the index"
            )
        return _Part(ACCESS_EXCLUSIVE, rewrites=True, tables=(table,), note=_REWRITING_CMDS[sub])
    if sub == _AT.AT_ValidateConstraint:
        return _Part(SHARE_UPDATE_EXCLUSIVE, scans=True, tables=(table,))
    if sub in _SHARE_UPDATE_EXCLUSIVE_CMDS:
        if sub == _AT.AT_AttachPartition and isinstance(cmd.def_, ast.PartitionCmd):
            partition = relation_name(cmd.def_.name)
            return _Part(
                ACCESS_EXCLUSIVE,
                scans=True,
                tables=(table, partition),
                note=f"SHARE UPDATE EXCLUSIVE on {table!r}, ACCESS EXCLUSIVE on the "
                f"partition {partition!r}, which is scanned unless a CHECK matches the bound",
            )
        return _Part(SHARE_UPDATE_EXCLUSIVE, tables=(table,))
    if sub in _SHARE_ROW_EXCLUSIVE_CMDS:
        return _Part(SHARE_ROW_EXCLUSIVE, tables=(table,))
    if sub in (_AT.AT_SetRelOptions, _AT.AT_ResetRelOptions):
        return _Part(_reloptions_mode(cmd.def_), tables=(table,))
    if sub == _AT.AT_DetachPartition and isinstance(cmd.def_, ast.PartitionCmd):
        partition = relation_name(cmd.def_.name)
        mode = SHARE_UPDATE_EXCLUSIVE if cmd.def_.concurrent else ACCESS_EXCLUSIVE
        return _Part(mode, tables=(table, partition))
    # Everything else in AlterTableGetLockLevel takes ACCESS EXCLUSIVE.
    return _Part(ACCESS_EXCLUSIVE, tables=(table,))


def _combine_parts(parts: list[_Part]) -> _Part:
    return _Part(
        mode=strongest(p.mode for p in parts),
        rewrites=any(p.rewrites for p in parts),
        scans=any(p.scans for p in parts),
        tables=tuple(dict.fromkeys(t for p in parts for t in p.tables)),
        note="; ".join(dict.fromkeys(p.note for p in parts if p.note)),
    )


def _alter_table(stmt: ast.AlterTableStmt, schema: SchemaView | None) -> LockInfo:
    table = relation_name(stmt.relation)
    parts = [
        _alter_table_cmd(table, cmd, schema, stmt.objtype)
        for cmd in stmt.cmds or ()
        if isinstance(cmd, ast.AlterTableCmd)
    ]
    if not parts:
        return make_lock(ACCESS_EXCLUSIVE, (table,))
    combined = _combine_parts(parts)
    return make_lock(
        combined.mode,
        combined.tables or (table,),
        rewrites=combined.rewrites,
        scans=combined.scans,
        note=combined.note,
    )


# --- everything else --------------------------------------------------------

_RELATION_DROPS: Final = frozenset(
    {
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_VIEW,
        ObjectType.OBJECT_MATVIEW,
        ObjectType.OBJECT_FOREIGN_TABLE,
        ObjectType.OBJECT_SEQUENCE,
    }
)
_TABLE_CHILD_DROPS: Final = frozenset(
    {ObjectType.OBJECT_TRIGGER, ObjectType.OBJECT_RULE, ObjectType.OBJECT_POLICY}
)
_RELATION_RENAMES: Final = frozenset(
    {
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_VIEW,
        ObjectType.OBJECT_MATVIEW,
        ObjectType.OBJECT_FOREIGN_TABLE,
        ObjectType.OBJECT_SEQUENCE,
        ObjectType.OBJECT_COLUMN,
        ObjectType.OBJECT_TABCONSTRAINT,
        ObjectType.OBJECT_TRIGGER,
        ObjectType.OBJECT_RULE,
        ObjectType.OBJECT_POLICY,
    }
)


def _option_names(options: Any) -> set[str]:
    return {str(getattr(o, "defname", "")).lower() for o in options or ()}


def _drop(stmt: ast.DropStmt) -> LockInfo:
    kind = stmt.removeType
    objects = [o for o in stmt.objects or () if isinstance(o, tuple | list)]
    if kind == ObjectType.OBJECT_INDEX:
        names = [qualified(o) for o in objects]
        if stmt.concurrent:
            return make_lock(SHARE_UPDATE_EXCLUSIVE, names, note="on the index's table")
        return make_lock(ACCESS_EXCLUSIVE, names, note="on the index's table, until commit")
    if kind in _RELATION_DROPS:
        return make_lock(ACCESS_EXCLUSIVE, [qualified(o) for o in objects])
    if kind in _TABLE_CHILD_DROPS:
        return make_lock(ACCESS_EXCLUSIVE, [qualified(list(o)[:-1]) for o in objects])
    return NO_LOCK


def _create_table(stmt: ast.CreateStmt) -> LockInfo:
    parts: list[_Part] = []
    for element in stmt.tableElts or ():
        constraints: list[ast.Constraint] = []
        if isinstance(element, ast.ColumnDef):
            constraints = column_constraints(element)
        elif isinstance(element, ast.Constraint):
            constraints = [element]
        for constraint in constraints:
            if constraint.contype == ConstrType.CONSTR_FOREIGN:
                referenced = relation_name(constraint.pktable)
                parts.append(
                    _Part(
                        SHARE_ROW_EXCLUSIVE,
                        tables=(referenced,),
                        note=f"SHARE ROW EXCLUSIVE on the referenced table {referenced!r} "
                        "to add its foreign-key triggers (brief)",
                    )
                )
    parents = [relation_name(rv) for rv in stmt.inhRelations or ()]
    if parents and stmt.partbound is not None:
        parts.append(_Part(ACCESS_EXCLUSIVE, tables=tuple(parents), note="PARTITION OF"))
    elif parents:
        parts.append(_Part(SHARE_UPDATE_EXCLUSIVE, tables=tuple(parents), note="INHERITS"))
    if not parts:
        return NO_LOCK
    combined = _combine_parts(parts)
    return make_lock(combined.mode, combined.tables, note=combined.note)


def _reindex(stmt: ast.ReindexStmt) -> LockInfo:
    name = relation_name(stmt.relation) if stmt.relation is not None else (stmt.name or "")
    if "concurrently" in _option_names(stmt.params):
        return make_lock(SHARE_UPDATE_EXCLUSIVE, [name], rewrites=True, note="rebuilds indexes")
    kind = "table" if stmt.kind != ReindexObjectType.REINDEX_OBJECT_INDEX else "index's table"
    return make_lock(
        ACCESS_EXCLUSIVE,
        [name],
        rewrites=True,
        note=f"SHARE on the {kind} (writes wait) and ACCESS EXCLUSIVE on each index being "
        "rebuilt (queries that plan with it wait)",
    )


def _vacuum(stmt: ast.VacuumStmt) -> LockInfo:
    tables = [relation_name(r.relation) for r in stmt.rels or () if hasattr(r, "relation")]
    if stmt.is_vacuumcmd and "full" in _option_names(stmt.options):
        return make_lock(ACCESS_EXCLUSIVE, tables, rewrites=True, note="VACUUM FULL")
    return make_lock(SHARE_UPDATE_EXCLUSIVE, tables)


def _select(stmt: ast.SelectStmt) -> LockInfo:
    tables = [relation_name(rv) for rv in stmt.fromClause or () if isinstance(rv, ast.RangeVar)]
    if stmt.intoClause is not None:
        return make_lock(ACCESS_SHARE, tables)
    mode = ROW_SHARE if stmt.lockingClause else ACCESS_SHARE
    return make_lock(mode, tables)


def _rename(stmt: ast.RenameStmt) -> LockInfo:
    if stmt.renameType == ObjectType.OBJECT_INDEX:
        return make_lock(SHARE_UPDATE_EXCLUSIVE, [relation_name(stmt.relation)])
    if stmt.renameType in _RELATION_RENAMES and stmt.relation is not None:
        return make_lock(ACCESS_EXCLUSIVE, [relation_name(stmt.relation)])
    return NO_LOCK


def _comment(stmt: ast.CommentStmt) -> LockInfo:
    if stmt.objtype == ObjectType.OBJECT_TABLE:
        return make_lock(SHARE_UPDATE_EXCLUSIVE, [qualified(stmt.object)])
    if stmt.objtype == ObjectType.OBJECT_COLUMN:
        parts = [p for p in strings(stmt.object)[:-1] if p not in DEFAULT_SCHEMAS]
        return make_lock(SHARE_UPDATE_EXCLUSIVE, [".".join(parts)])
    return NO_LOCK


def lock_for(node: Any, schema: SchemaView | None = None) -> LockInfo:
    """The PostgreSQL 15 lock a parsed statement takes (``node`` = RawStmt.stmt)."""
    match node:
        case ast.AlterTableStmt():
            return _alter_table(node, schema)
        case ast.IndexStmt():
            table = relation_name(node.relation)
            if node.concurrent:
                return make_lock(SHARE_UPDATE_EXCLUSIVE, [table], scans=True)
            return make_lock(SHARE, [table], scans=True, note="for the whole index build")
        case ast.DropStmt():
            return _drop(node)
        case ast.RenameStmt():
            return _rename(node)
        case ast.AlterObjectSchemaStmt() if node.relation is not None:
            return make_lock(ACCESS_EXCLUSIVE, [relation_name(node.relation)])
        case ast.CreateStmt():
            return _create_table(node)
        case ast.CreateTableAsStmt():
            return make_lock(ACCESS_SHARE, note="on the tables the query reads")
        case ast.ViewStmt():
            if node.replace:
                return make_lock(ACCESS_EXCLUSIVE, [relation_name(node.view)])
            return make_lock(ACCESS_SHARE, note="on the tables the view reads")
        case ast.CreateTrigStmt():
            return make_lock(SHARE_ROW_EXCLUSIVE, [relation_name(node.relation)])
        case ast.CreatePolicyStmt() | ast.AlterPolicyStmt():
            return make_lock(ACCESS_EXCLUSIVE, [relation_name(node.table)])
        case ast.RuleStmt():
            return make_lock(ACCESS_EXCLUSIVE, [relation_name(node.relation)])
        case ast.VacuumStmt():
            return _vacuum(node)
        case ast.ClusterStmt():
            tables = [relation_name(node.relation)] if node.relation is not None else []
            return make_lock(ACCESS_EXCLUSIVE, tables, rewrites=True, note="CLUSTER")
        case ast.ReindexStmt():
            return _reindex(node)
        case ast.TruncateStmt():
            return make_lock(ACCESS_EXCLUSIVE, [relation_name(rv) for rv in node.relations or ()])
        case ast.LockStmt():
            mode = _LOCK_STMT_MODES.get(int(node.mode or 8), ACCESS_EXCLUSIVE)
            return make_lock(mode, [relation_name(rv) for rv in node.relations or ()])
        case ast.InsertStmt() | ast.UpdateStmt() | ast.DeleteStmt() | ast.MergeStmt():
            return make_lock(ROW_EXCLUSIVE, [relation_name(node.relation)])
        case ast.SelectStmt():
            return _select(node)
        case ast.CopyStmt():
            mode = ROW_EXCLUSIVE if node.is_from else ACCESS_SHARE
            tables = [relation_name(node.relation)] if node.relation is not None else []
            return make_lock(mode, tables)
        case ast.RefreshMatViewStmt():
            mode = EXCLUSIVE if node.concurrent else ACCESS_EXCLUSIVE
            return make_lock(mode, [relation_name(node.relation)], rewrites=True)
        case ast.AlterDomainStmt() if node.subtype in ("C", "N"):
            return make_lock(
                SHARE, scans=True, note="on every table with a column of this domain, to check it"
            )
        case ast.CommentStmt():
            return _comment(node)
        case ast.CreateStatsStmt():
            tables = [
                relation_name(rv) for rv in node.relations or () if isinstance(rv, ast.RangeVar)
            ]
            return make_lock(SHARE_UPDATE_EXCLUSIVE, tables)
        case ast.DoStmt() | ast.CallStmt():
            return make_lock(UNKNOWN, note="procedural code: the linter cannot see its locks")
        case _:
            return NO_LOCK
