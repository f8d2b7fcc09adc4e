"""What the linter knows while it walks the statements of a file, in order.

Two layers:

* :class:`SchemaFacts` outlives a file. When a directory of migrations is
  linted in version order, facts found in one file help the next: a CHECK
  (col IS NOT NULL) validated in ``0007`` lets ``0009`` SET NOT NULL without a
  finding; the type a column was created with decides whether ``0012``'s type
  change rewrites.
* :class:`Context` is one file: tables created in it (new and empty, so most
  hazards do not apply), columns added in it, and the transaction each
  statement runs in.

Transactions. Migration tools run a file in one transaction (Rails, Django,
Flyway, Alembic, and bluegreen's runner for consecutive transactional
statements), so statements outside an explicit ``BEGIN ... COMMIT`` are taken
as one transaction. Statements that cannot run in a transaction block
(``CREATE INDEX CONCURRENTLY`` and friends, ``VACUUM``) and batched backfills
(``-- bluegreen:backfill``) run on their own and end it. Locks taken by a
statement are held until that transaction ends: a later slow statement in the
same transaction keeps them held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pglast import ast
from pglast.enums import (
    AlterTableType,
    ConstrType,
    NullTestType,
    ObjectType,
    ReindexObjectType,
    TransactionStmtKind,
)

from bluegreen.migrations.files import Phase
from bluegreen.migrations.lint.locks import NO_LOCK, LockInfo, blocks_writes, lock_for
from bluegreen.migrations.lint.nodes import (
    TypeSpec,
    alter_cmds,
    column_constraints,
    column_refs,
    qualified,
    relation_name,
    strings,
    type_spec,
)
from bluegreen.migrations.sql import Statement

_ENDS_TRANSACTION = frozenset(
    {
        TransactionStmtKind.TRANS_STMT_COMMIT,
        TransactionStmtKind.TRANS_STMT_ROLLBACK,
        TransactionStmtKind.TRANS_STMT_PREPARE,
        TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED,
        TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED,
    }
)
_REINDEX_MANY = frozenset(
    {
        ReindexObjectType.REINDEX_OBJECT_SCHEMA,
        ReindexObjectType.REINDEX_OBJECT_SYSTEM,
        ReindexObjectType.REINDEX_OBJECT_DATABASE,
    }
)
_STARTS_TRANSACTION = frozenset(
    {TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START}
)


def is_concurrent(node: object) -> bool:
    """Whether a statement uses CONCURRENTLY in a form that refuses a transaction block."""
    match node:
        case ast.IndexStmt() | ast.DropStmt():
            return bool(node.concurrent)
        case ast.ReindexStmt():
            return any(getattr(p, "defname", "") == "concurrently" for p in node.params or ())
        case ast.AlterTableStmt():
            return any(
                isinstance(cmd, ast.AlterTableCmd)
                and cmd.subtype == AlterTableType.AT_DetachPartition
                and isinstance(cmd.def_, ast.PartitionCmd)
                and bool(cmd.def_.concurrent)
                for cmd in node.cmds or ()
            )
    return False


def runs_outside_transaction(stmt: Statement) -> bool:
    """Whether the statement runs on its own, outside any transaction block.

    These are the statements PostgreSQL refuses inside ``BEGIN`` (the same list
    as the runner's ``plan.transaction_restriction``); the runner runs them (and
    ``-- bluegreen:backfill`` batches) outside its transaction.
    """
    node = stmt.node
    if is_concurrent(node):
        return True
    if isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd:
        return True
    if isinstance(node, ast.ClusterStmt) and node.relation is None:
        return True
    if isinstance(node, ast.ReindexStmt) and node.kind in _REINDEX_MANY:
        return True
    if isinstance(node, ast.UpdateStmt | ast.DeleteStmt) and stmt.directive("backfill"):
        return True
    return isinstance(
        node,
        ast.CreatedbStmt
        | ast.DropdbStmt
        | ast.AlterSystemStmt
        | ast.CreateTableSpaceStmt
        | ast.DropTableSpaceStmt
        | ast.DiscardStmt,
    )


def default_constraint_name(table: str, constraint: ast.Constraint, columns: list[str]) -> str:
    """The name PostgreSQL gives an unnamed constraint (``orders_user_id_fkey``)."""
    base = table.split(".")[-1]
    suffix = {
        ConstrType.CONSTR_CHECK: "check",
        ConstrType.CONSTR_FOREIGN: "fkey",
        ConstrType.CONSTR_UNIQUE: "key",
        ConstrType.CONSTR_PRIMARY: "pkey",
        ConstrType.CONSTR_EXCLUSION: "excl",
    }.get(constraint.contype or ConstrType.CONSTR_NULL, "constraint")
    if constraint.contype == ConstrType.CONSTR_PRIMARY:
        return f"{base}_pkey"
    if constraint.contype == ConstrType.CONSTR_CHECK:
        columns = columns[:1]
    return "_".join([base, *columns, suffix])


def constraint_columns(constraint: ast.Constraint, column: str | None = None) -> list[str]:
    """The columns a constraint is about (its own column for an inline one)."""
    if column is not None:
        return [column]
    if constraint.contype == ConstrType.CONSTR_FOREIGN:
        return strings(constraint.fk_attrs)
    if constraint.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY):
        return strings(constraint.keys)
    if constraint.contype == ConstrType.CONSTR_CHECK:
        return list(dict.fromkeys(column_refs(constraint.raw_expr)))
    return []


def not_null_check_column(constraint: ast.Constraint) -> str | None:
    """``col`` if the constraint is ``CHECK (col IS NOT NULL)``, else None."""
    expr = constraint.raw_expr
    if (
        constraint.contype == ConstrType.CONSTR_CHECK
        and isinstance(expr, ast.NullTest)
        and expr.nulltesttype == NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
    ):
        parts = strings(expr.arg.fields)
        return parts[-1] if parts else None
    return None


_CONSTRAINT_KINDS = {
    ConstrType.CONSTR_CHECK: "CHECK",
    ConstrType.CONSTR_FOREIGN: "FOREIGN KEY",
    ConstrType.CONSTR_UNIQUE: "UNIQUE",
    ConstrType.CONSTR_PRIMARY: "PRIMARY KEY",
    ConstrType.CONSTR_EXCLUSION: "EXCLUDE",
}


@dataclass(slots=True)
class ConstraintFact:
    """A table constraint some linted statement added."""

    table: str
    name: str
    kind: str
    validated: bool
    not_null_column: str | None = None
    referenced: str | None = None


@dataclass(slots=True)
class IndexFact:
    """An index some linted statement created."""

    name: str
    table: str
    unique: bool


@dataclass(slots=True)
class SchemaFacts:
    """What linted statements established about the schema; carried across files."""

    column_types: dict[tuple[str, str], TypeSpec] = field(default_factory=dict)
    constraints: dict[tuple[str, str], ConstraintFact] = field(default_factory=dict)
    indexes: dict[str, IndexFact] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)

    def column_type(self, table: str, column: str) -> TypeSpec | None:
        """The declared type of ``table.column`` if a linted statement set it."""
        return self.column_types.get((table, column))

    def function_volatility(self, name: str) -> str | None:
        """``i``/``s``/``v`` of a function created by a linted statement."""
        return self.functions.get(name)

    def has_not_null_check(self, table: str, column: str) -> bool:
        """Whether a validated ``CHECK (column IS NOT NULL)`` on ``table`` is known."""
        return any(
            c.table == table and c.not_null_column == column and c.validated
            for c in self.constraints.values()
        )

    def rename_table(self, old: str, new: str) -> None:
        """Follow ``ALTER TABLE old RENAME TO new``."""
        self.column_types = {
            ((new if t == old else t), c): v for (t, c), v in self.column_types.items()
        }
        for fact in self.constraints.values():
            if fact.table == old:
                fact.table = new
        self.constraints = {((f.table), f.name): f for f in self.constraints.values()}
        for index in self.indexes.values():
            if index.table == old:
                index.table = new


@dataclass(frozen=True, slots=True)
class HeldLock:
    """A table lock an earlier statement of the current transaction still holds."""

    table: str
    mode: str
    line: int


@dataclass(slots=True)
class Transaction:
    """The transaction the current statement runs in."""

    explicit: bool
    start_line: int = 0
    locks: list[HeldLock] = field(default_factory=list)
    not_valid: dict[tuple[str, str], int] = field(default_factory=dict)
    enum_values: dict[str, tuple[str, int]] = field(default_factory=dict)


class Context:
    """The linter's view of a file while it walks its statements in order."""

    def __init__(
        self,
        statements: Sequence[Statement],
        *,
        path: str,
        phase: Phase | None,
        migration: bool,
        facts: SchemaFacts | None = None,
        known_rules: frozenset[str] = frozenset(),
    ) -> None:
        self.statements = statements
        self.known_rules = known_rules
        self.path = path
        self.phase = phase
        self.migration = migration
        self.facts = facts if facts is not None else SchemaFacts()
        self.index = -1
        self.lock: LockInfo = NO_LOCK
        self.tables_created: set[str] = set()
        self.columns_added: set[tuple[str, str]] = set()
        self.indexes_created: set[str] = set()
        self.types_created: set[str] = set()
        self.tx = Transaction(explicit=False)

    # --- questions rules ask -------------------------------------------------

    def is_new(self, table: str) -> bool:
        """Whether ``table`` was created earlier in this file (new and empty)."""
        return table in self.tables_created

    def is_new_column(self, table: str, column: str) -> bool:
        """Whether the column (or its table) was added earlier in this file."""
        return self.is_new(table) or (table, column) in self.columns_added

    def existing_table_cmds(
        self, node: object, *subtypes: AlterTableType
    ) -> list[tuple[ast.AlterTableStmt, str, ast.AlterTableCmd]]:
        """``(statement, table, cmd)`` per ``subtypes`` subcommand if ``node`` alters an old table.

        Old: the table existed before this file (:meth:`is_new` is false).
        """
        if not isinstance(node, ast.AlterTableStmt):
            return []
        table = relation_name(node.relation)
        if self.is_new(table):
            return []
        return [(node, table, cmd) for cmd in alter_cmds(node, *subtypes)]

    def columns_added_to_existing_table(
        self, node: object
    ) -> list[tuple[ast.AlterTableStmt, str, ast.ColumnDef]]:
        """``(statement, table, column)`` for each ADD COLUMN of :meth:`existing_table_cmds`."""
        return [
            (alter, table, cmd.def_)
            for alter, table, cmd in self.existing_table_cmds(node, AlterTableType.AT_AddColumn)
            if isinstance(cmd.def_, ast.ColumnDef)
        ]

    @property
    def in_explicit_transaction(self) -> bool:
        """Whether the statement is inside an explicit ``BEGIN ... COMMIT`` block."""
        return self.tx.explicit

    @property
    def contract(self) -> bool:
        """Whether the file is a contract-phase migration (destructive steps allowed)."""
        return self.phase == Phase.CONTRACT

    def later(self) -> Sequence[Statement]:
        """The statements after the current one in this file."""
        return self.statements[self.index + 1 :]

    def held_blocking_locks(self) -> list[HeldLock]:
        """Locks that block writes, held on existing tables by earlier statements of this
        transaction."""
        return [
            held
            for held in self.tx.locks
            if blocks_writes(held.mode) and not self.is_new(held.table)
        ]

    def index_table(self, index: str) -> str | None:
        """The table of an index created by a linted statement."""
        fact = self.facts.indexes.get(index)
        return fact.table if fact is not None else None

    # SchemaView, for lock_for
    def column_type(self, table: str, column: str) -> TypeSpec | None:
        """The declared type of ``table.column`` if a linted statement set it."""
        return self.facts.column_type(table, column)

    def function_volatility(self, name: str) -> str | None:
        """``i``/``s``/``v`` of a function created by a linted statement."""
        return self.facts.function_volatility(name)

    def has_not_null_check(self, table: str, column: str) -> bool:
        """Whether a validated ``CHECK (column IS NOT NULL)`` on ``table`` is known."""
        return self.facts.has_not_null_check(table, column)

    # --- walking -------------------------------------------------------------

    def enter(self, index: int, stmt: Statement) -> None:
        """Move to statement ``index`` (before the rules look at it)."""
        self.index = index
        node = stmt.node
        if isinstance(node, ast.TransactionStmt) and node.kind in _STARTS_TRANSACTION:
            if not self.tx.explicit:  # a BEGIN inside a block only warns in PostgreSQL
                self.tx = Transaction(explicit=True, start_line=stmt.line)
        elif not self.tx.explicit and runs_outside_transaction(stmt):
            self.tx = Transaction(explicit=False, start_line=stmt.line)
        self.lock = lock_for(node, self)

    def leave(self, stmt: Statement) -> None:
        """Record what the statement did (after the rules looked at it)."""
        node = stmt.node
        if isinstance(node, ast.TransactionStmt):
            if node.kind in _ENDS_TRANSACTION:
                self.tx = Transaction(explicit=False, start_line=stmt.line + 1)
            return
        if not self.tx.explicit and runs_outside_transaction(stmt):
            self.tx = Transaction(explicit=False, start_line=stmt.line + 1)
        else:
            for table in self.lock.tables:
                self.tx.locks.append(HeldLock(table, self.lock.mode, stmt.line))
        self._record(stmt)

    def _record(self, stmt: Statement) -> None:
        node = stmt.node
        match node:
            case ast.CreateStmt():
                self._record_create_table(node)
            case ast.CreateTableAsStmt(into=ast.IntoClause() as into):
                self.tables_created.add(relation_name(into.rel))
            case ast.SelectStmt(intoClause=ast.IntoClause() as into):
                self.tables_created.add(relation_name(into.rel))
            case ast.AlterTableStmt():
                table = relation_name(node.relation)
                for cmd in node.cmds or ():
                    if isinstance(cmd, ast.AlterTableCmd):
                        self._record_alter(table, cmd, stmt.line)
            case ast.RenameStmt():
                self._record_rename(node)
            case ast.IndexStmt():
                table = relation_name(node.relation)
                name = node.idxname or f"{table.split('.')[-1]}_idx"
                self.facts.indexes[name] = IndexFact(name, table, bool(node.unique))
                self.indexes_created.add(name)
            case ast.DropStmt():
                self._record_drop(node)
            case ast.CreateFunctionStmt():
                self._record_function(node)
            case ast.CreateEnumStmt():
                self.types_created.add(qualified(node.typeName))
            case ast.AlterEnumStmt() if node.newVal and not node.oldVal and not self.migration:
                self.tx.enum_values[node.newVal] = (qualified(node.typeName), stmt.line)

    def _record_create_table(self, node: ast.CreateStmt) -> None:
        table = relation_name(node.relation)
        self.tables_created.add(table)
        for element in node.tableElts or ():
            if isinstance(element, ast.ColumnDef) and element.colname:
                spec = type_spec(element.typeName)
                if spec is not None:
                    self.facts.column_types[(table, element.colname)] = spec
                for constraint in column_constraints(element):
                    self._record_constraint(table, constraint, element.colname, validated=True)
            elif isinstance(element, ast.Constraint):
                self._record_constraint(table, element, None, validated=True)

    def _record_constraint(
        self, table: str, constraint: ast.Constraint, column: str | None, *, validated: bool
    ) -> None:
        kind = _CONSTRAINT_KINDS.get(constraint.contype or ConstrType.CONSTR_NULL)
        if kind is None:
            return
        name = constraint.conname or default_constraint_name(
            table, constraint, constraint_columns(constraint, column)
        )
        self.facts.constraints[(table, name)] = ConstraintFact(
            table=table,
            name=name,
            kind=kind,
            validated=validated,
            not_null_column=not_null_check_column(constraint),
            referenced=relation_name(constraint.pktable) if constraint.pktable else None,
        )

    def _record_alter(self, table: str, cmd: ast.AlterTableCmd, line: int) -> None:
        sub = cmd.subtype
        if sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            column = cmd.def_.colname or ""
            self.columns_added.add((table, column))
            spec = type_spec(cmd.def_.typeName)
            if spec is not None:
                self.facts.column_types[(table, column)] = spec
            for constraint in column_constraints(cmd.def_):
                self._record_constraint(table, constraint, column, validated=True)
        elif sub == AlterTableType.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
            spec = type_spec(cmd.def_.typeName)
            if spec is not None:
                self.facts.column_types[(table, cmd.name or "")] = spec
        elif sub == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            validated = not cmd.def_.skip_validation
            self._record_constraint(table, cmd.def_, None, validated=validated)
            if not validated:
                name = cmd.def_.conname or default_constraint_name(
                    table, cmd.def_, constraint_columns(cmd.def_)
                )
                self.tx.not_valid[(table, name)] = line
        elif sub == AlterTableType.AT_ValidateConstraint and cmd.name:
            fact = self.facts.constraints.get((table, cmd.name))
            if fact is None:
                self.facts.constraints[(table, cmd.name)] = ConstraintFact(
                    table, cmd.name, "", validated=True
                )
            else:
                fact.validated = True
        elif sub == AlterTableType.AT_DropConstraint and cmd.name:
            self.facts.constraints.pop((table, cmd.name), None)

    def _record_rename(self, node: ast.RenameStmt) -> None:
        if node.relation is None or not node.newname:
            return
        table = relation_name(node.relation)
        if node.renameType == ObjectType.OBJECT_TABLE:
            schema = table.rsplit(".", 1)[0] if "." in table else ""
            new = f"{schema}.{node.newname}" if schema else node.newname
            if table in self.tables_created:
                self.tables_created.discard(table)
                self.tables_created.add(new)
            self.facts.rename_table(table, new)
        elif node.renameType == ObjectType.OBJECT_COLUMN and node.subname:
            old_key, new_key = (table, node.subname), (table, node.newname)
            if old_key in self.columns_added:
                self.columns_added.discard(old_key)
                self.columns_added.add(new_key)
            if old_key in self.facts.column_types:
                self.facts.column_types[new_key] = self.facts.column_types.pop(old_key)
        elif node.renameType == ObjectType.OBJECT_INDEX:
            fact = self.facts.indexes.pop(table, None)
            if fact is not None:
                fact.name = node.newname
                self.facts.indexes[node.newname] = fact

    def _record_drop(self, node: ast.DropStmt) -> None:
        names = [qualified(o) for o in node.objects or () if isinstance(o, tuple | list)]
        if node.removeType == ObjectType.OBJECT_INDEX:
            for name in names:
                self.facts.indexes.pop(name, None)
        elif node.removeType == ObjectType.OBJECT_TABLE:
            for name in names:
                self.tables_created.discard(name)

    def _record_function(self, node: ast.CreateFunctionStmt) -> None:
        name = (strings(node.funcname) or [""])[-1].lower()
        volatility = "v"
        for option in node.options or ():
            if getattr(option, "defname", "") == "volatility":
                value = getattr(option.arg, "sval", "") or ""
                volatility = value[:1].lower() or "v"
        self.facts.functions[name] = volatility


@dataclass(frozen=True, slots=True)
class Ignore:
    """One ``-- bluegreen:ignore RULE[,RULE...] reason`` directive."""

    rules: tuple[str, ...]
    reason: str
    line: int


def ignores(stmt: Statement) -> list[Ignore]:
    """The ignore directives attached to a statement."""
    found = []
    for directive in stmt.directives:
        if directive.name != "ignore":
            continue
        head, _, reason = directive.args.strip().partition(" ")
        rules = tuple(r.strip().lower() for r in head.split(",") if r.strip())
        found.append(Ignore(rules, reason.strip().lstrip("-").strip(), directive.line))
    return found
