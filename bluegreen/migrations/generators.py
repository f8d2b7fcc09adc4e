"""Migration sets for the seed's zero-downtime strategies, generated from a request.

PURE: a request plus the names of the files already in the directory and the
current time go in; file names and texts come out. Nothing here reads the
database or the disk (the CLI looks up column types and writes the files).

Each generator writes one file per step, in bluegreen's migration format,
with the phase, a down section when the step can be undone (or
``-- bluegreen:irreversible`` with the reason when it cannot), and comments
saying what the step does and what the application must do before the next
one. The strategies (the seed's, made safe for PostgreSQL):

``rename-column``  expand: add the new column and a trigger that keeps old and new
                   equal whichever one a writer sets (the seed's shadow write, done
                   in the database) -> migrate: batched backfill -> contract: drop
                   the trigger and the old column.
``change-type``    the same through a column of the new type, with casts (or
                   ``--using``) in the trigger and the backfill; optionally followed
                   by a rename back to the original name.
``set-not-null``   CHECK (col IS NOT NULL) NOT VALID -> backfill -> VALIDATE
                   CONSTRAINT (its own migration) -> SET NOT NULL + drop the CHECK.
``add-index``      CREATE [UNIQUE] INDEX CONCURRENTLY in its own migration.
``drop-column``    contract only, after a grace period.
``template``       an empty file for a phase.

Identifiers given by users are SQL identifiers (``Orders`` means ``orders``;
write ``'"Orders"'`` for a mixed-case name), types and expressions are SQL;
all of them are checked with PostgreSQL's parser (pglast) and re-quoted.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pglast
from pglast import ast, keywords
from pglast.parser import ParseError
from pglast.stream import RawStream

from bluegreen.errors import UsageError
from bluegreen.migrations.files import Phase, parse_directive

MAX_IDENTIFIER: Final = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names
TIMESTAMP_FORMAT: Final = "%Y%m%d%H%M%S"
DEFAULT_BATCH_SIZE: Final = 1000
_DOLLAR_TAG: Final = "$bluegreen$"
_VERSION_PREFIX = re.compile(r"^(\d+)_")
_SIMPLE_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")
_QUOTE_EXEMPT: Final = frozenset(keywords.UNRESERVED_KEYWORDS)


# --------------------------------------------------------------------------- SQL names and text


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's ``quote_ident`` does.

    Plain lower-case names and unreserved keywords stay bare; anything else is
    double-quoted with inner quotes doubled.
    """
    if _SIMPLE_IDENT.match(name) and (
        name in _QUOTE_EXEMPT
        or name
        not in keywords.RESERVED_KEYWORDS
        | keywords.TYPE_FUNC_NAME_KEYWORDS
        | keywords.COL_NAME_KEYWORDS
    ):
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(parts: Sequence[str]) -> str:
    """``schema.table`` with each part quoted as needed."""
    return ".".join(quote_ident(part) for part in parts)


def _parse_one(sql: str, what: str, value: str) -> Any:
    try:
        statements = pglast.parse_sql(sql)
    except ParseError:
        raise UsageError(f"{what}: {value!r} is not valid SQL here") from None
    if len(statements) != 1:
        raise UsageError(f"{what}: {value!r} is not valid SQL here")
    return statements[0].stmt


def _select_target(sql: str, what: str, value: str) -> Any:
    """The one expression of ``SELECT <expr>`` (no FROM, WHERE or alias), else None."""
    stmt: Any = _parse_one(sql, what, value)
    if not isinstance(stmt, ast.SelectStmt):
        return None
    targets: Any = stmt.targetList
    if not targets or len(targets) != 1 or stmt.fromClause or stmt.whereClause or targets[0].name:
        return None
    return targets[0].val


def parse_table(value: str) -> tuple[str, ...]:
    """``orders`` -> ``("orders",)``, ``app.Orders`` -> ``("app", "orders")``."""
    stmt: Any = _parse_one(f"SELECT FROM {value}", "table", value)
    sources: Any = getattr(stmt, "fromClause", None)
    rangevar: Any = sources[0] if sources and len(sources) == 1 else None
    if (
        not isinstance(rangevar, ast.RangeVar)
        or stmt.whereClause is not None
        or rangevar.alias is not None
        or rangevar.catalogname
        or not rangevar.inh
    ):
        raise UsageError(f"table: {value!r} is not a table name; write orders or app.orders")
    schema: str | None = rangevar.schemaname
    name: str = str(rangevar.relname)
    return (schema, name) if schema else (name,)


def parse_column(value: str, what: str = "column") -> str:
    """A column name as PostgreSQL stores it (``Status`` -> ``status``)."""
    expr = _select_target(f"SELECT {value}", what, value)
    if (
        not isinstance(expr, ast.ColumnRef)
        or len(expr.fields or ()) != 1
        or not isinstance(fields := expr.fields[0] if expr.fields else None, ast.String)
    ):
        raise UsageError(f"{what}: {value!r} is not a column name")
    return str(fields.sval)


def parse_type(value: str, what: str = "type") -> str:
    """A type name, checked and written the way PostgreSQL's parser reads it."""
    expr = _select_target(f"SELECT CAST(NULL AS {value})", what, value)
    if not isinstance(expr, ast.TypeCast) or not isinstance(expr.arg, ast.A_Const):
        raise UsageError(f"{what}: {value!r} is not a type; write e.g. bigint or 'varchar(20)'")
    type_name: Any = expr.typeName
    return str(RawStream()(type_name))


def parse_expression(value: str, what: str, *, allow_columns: bool) -> Any:
    """One SQL expression's parse tree; ``allow_columns=False`` for defaults."""
    expr = _select_target(f"SELECT {value}", what, value)
    if expr is None:
        raise UsageError(f"{what}: {value!r} is not one SQL expression")
    for node in _walk(expr):
        if isinstance(node, ast.SubLink):
            raise UsageError(f"{what}: {value!r}: subqueries are not allowed here")
        if isinstance(node, ast.ParamRef):
            raise UsageError(f"{what}: {value!r}: parameters ($1) are not allowed here")
        if isinstance(node, ast.ColumnRef):
            if not allow_columns:
                raise UsageError(
                    f"{what}: {value!r} refers to a column; a default is a constant "
                    "expression. Quote text values: --default \"'pending'\""
                )
            fields: Any = node.fields
            if len(fields) != 1 or not isinstance(fields[0], ast.String):
                raise UsageError(
                    f"{what}: {value!r}: refer to columns of the row by their bare name"
                )
    return expr


def _walk(node: Any) -> Iterable[Any]:
    """Every node of a parse tree, depth first."""
    todo = [node]
    while todo:
        current = todo.pop()
        if isinstance(current, tuple | list):
            todo.extend(current)
        elif isinstance(current, ast.Node):
            yield current
            todo.extend(getattr(current, slot) for slot in getattr(current, "__slots__", ()))


def render_expression(expr: Any, *, row: str | None = None) -> str:
    """SQL text of an expression; with ``row``, bare column names become ``row.col``."""
    if row is not None:
        expr = _qualify_columns(expr, row)
    rendered: str = RawStream()(expr)
    return rendered


def _qualify_columns(expr: Any, row: str) -> Any:
    # Parse trees are mutable; rebuild from a fresh parse so the caller's tree stays intact.
    copy = _select_target(f"SELECT {RawStream()(expr)}", "expression", "")
    for node in _walk(copy):
        if isinstance(node, ast.ColumnRef):
            fields: Any = node.fields
            if len(fields) == 1:
                node.fields = (ast.String(sval=row), fields[0])
    return copy


def limit_name(name: str) -> str:
    """Keep a generated object name within PostgreSQL's 63 bytes, unambiguously."""
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:8]
    head = name.encode("utf-8")[: MAX_IDENTIFIER - 9].decode("utf-8", "ignore")
    return f"{head}_{digest}"


def slug(*parts: str) -> str:
    """A file-name-safe ``lower_snake`` name from parts."""
    text = "_".join(_SLUG_UNSAFE.sub("_", part.lower()).strip("_") for part in parts if part)
    return text[:80].strip("_") or "migration"


# --------------------------------------------------------------------------- versions


def _timestamp(version: str) -> datetime | None:
    if len(version) != len("20240101120000"):
        return None
    try:
        return datetime.strptime(version, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def next_versions(existing: Iterable[str], count: int, now: datetime) -> list[str]:
    """Versions for ``count`` new files, after every file in ``existing``.

    The newest existing file decides the scheme: a sequence number (``0007``)
    continues with the same width (``0008``, ``0009``); a UTC timestamp
    (``20240101120000``, dbmate's scheme) continues with timestamps from
    ``now``, one second apart, always after the newest existing one. An empty
    directory starts with timestamps, which do not collide across branches.
    """
    versions = [m.group(1) for name in existing if (m := _VERSION_PREFIX.match(name))]
    newest = max(versions, key=int, default=None)
    if newest is not None and _timestamp(newest) is None:
        width = max(len(v) for v in versions if _timestamp(v) is None)
        return [str(int(newest) + i).zfill(width) for i in range(1, count + 1)]
    start = now.astimezone(UTC).replace(microsecond=0)
    latest = _timestamp(newest) if newest is not None else None
    if latest is not None and start <= latest:
        start = latest + timedelta(seconds=1)
    return [(start + timedelta(seconds=i)).strftime(TIMESTAMP_FORMAT) for i in range(count)]


# --------------------------------------------------------------------------- output values


@dataclass(frozen=True, slots=True)
class GeneratedFile:
    """One migration file: its name (``<version>_<slug>.sql``), phase and text."""

    name: str
    phase: Phase
    text: str
    reversible: bool


@dataclass(frozen=True, slots=True)
class GeneratedSet:
    """The files of one strategy, in order, and the rollout steps around them."""

    files: tuple[GeneratedFile, ...]
    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Draft:
    slug: str
    phase: Phase
    title: str
    render: Callable[[Sequence[str]], tuple[str, str, str | None, str | None]]
    # render(file names) -> (explanation, up SQL, down SQL or None, irreversible reason or None)


def _comment(text: str) -> str:
    """Text as ``--`` comment lines of at most 92 columns.

    Paragraphs are separated by blank lines; a line starting with ``* `` is a
    list item and keeps its own line.
    """
    out: list[str] = []
    for paragraph in text.strip().split("\n\n"):
        if out:
            out.append("--")
        blocks: list[str] = []
        for line in paragraph.split("\n"):
            if line.startswith("* ") or not blocks:
                blocks.append(line.strip())
            else:
                blocks[-1] += " " + line.strip()
        for block in blocks:
            indent = "  " if block.startswith("* ") else ""
            wrapped = textwrap.wrap(
                block, width=89, subsequent_indent=indent, break_on_hyphens=False
            )
            out.extend(f"-- {line}" for line in wrapped)
    for line in out:
        # prose must never turn into a directive where a line happens to wrap
        assert parse_directive(line) is None, line  # noqa: S101 - a generator bug, not input
    return "\n".join(out)


def _file_text(
    phase: Phase, title: str, explanation: str, up: str, down: str | None, irreversible: str | None
) -> str:
    parts = [f"-- bluegreen:phase {phase.value}"]
    if irreversible is not None:
        parts.append(f"-- bluegreen:irreversible {irreversible}")
    parts.append("--")
    parts.append(_comment(title))
    parts.append("--")
    parts.append(_comment(explanation))
    parts.append("")
    parts.append("-- bluegreen:up")
    parts.append(up.strip("\n"))
    if down is not None:
        parts.append("")
        parts.append("-- bluegreen:down")
        parts.append(down.strip("\n"))
    return "\n".join(parts) + "\n"


def _assemble(
    groups: Sequence[Sequence[_Draft]],
    steps: Callable[[Sequence[Sequence[str]]], Sequence[str]],
    existing: Iterable[str],
    now: datetime,
) -> GeneratedSet:
    """Number the drafts and render them; each draft sees the file names of its group."""
    drafts = [draft for group in groups for draft in group]
    versions = next_versions(existing, len(drafts), now)
    names = [f"{v}_{d.slug}.sql" for v, d in zip(versions, drafts, strict=True)]
    grouped: list[list[str]] = []
    for group in groups:
        start = sum(len(g) for g in grouped)
        grouped.append(names[start : start + len(group)])
    files = []
    position = 0
    for group, group_names in zip(groups, grouped, strict=True):
        for draft, name in zip(group, group_names, strict=True):
            position += 1
            explanation, up, down, irreversible = draft.render(group_names)
            title = f"{draft.title} (step {position} of {len(drafts)}: {draft.phase.value})"
            if len(drafts) == 1:
                title = f"{draft.title} ({draft.phase.value})"
            text = _file_text(draft.phase, title, explanation, up, down, irreversible)
            files.append(GeneratedFile(name, draft.phase, text, down is not None))
    return GeneratedSet(tuple(files), tuple(steps(grouped)))


# --------------------------------------------------------------------------- shared SQL pieces


def _nothing_to_undo(reason: str) -> str:
    """A down section with only a comment: reversible, nothing to run, and why."""
    return _comment(f"nothing to undo: {reason}")


@dataclass(frozen=True, slots=True)
class _Table:
    parts: tuple[str, ...]

    @property
    def sql(self) -> str:
        return quote_qualified(self.parts)

    @property
    def name(self) -> str:
        return self.parts[-1]

    def object(self, name: str) -> str:
        """A schema object (function) in the table's schema."""
        return quote_qualified((*self.parts[:-1], name))


def _backfill_sql(table: _Table, target: str, value: str, source: str, batch_size: int) -> str:
    return (
        f"-- bluegreen:backfill batch-size={batch_size}\n"
        f"UPDATE {table.sql} SET {quote_ident(target)} = {value}\n"
        f"WHERE {quote_ident(target)} IS NULL AND {quote_ident(source)} IS NOT NULL;"
    )


@dataclass(frozen=True, slots=True)
class _Sync:
    """A trigger that keeps ``old`` and ``new`` equal (through conversions) on every write."""

    table: _Table
    old: str
    new: str
    to_new: Any  # expression over the row's columns giving the new column's value
    to_old: Any  # expression over the row's columns giving the old column's value

    @property
    def function_name(self) -> str:
        return limit_name(f"bluegreen_sync_{self.table.name}_{self.old}_{self.new}")

    @property
    def function(self) -> str:
        return self.table.object(self.function_name)

    @property
    def trigger(self) -> str:
        return quote_ident(self.function_name)

    def create(self) -> str:
        old, new = f"NEW.{quote_ident(self.old)}", f"NEW.{quote_ident(self.new)}"
        prev_old, prev_new = f"OLD.{quote_ident(self.old)}", f"OLD.{quote_ident(self.new)}"
        to_new = _row_expression(self.to_new)
        to_old = _row_expression(self.to_old)
        # identifiers are quoted and expressions re-rendered from their parse trees
        body = f"""\
CREATE OR REPLACE FUNCTION {self.function}() RETURNS trigger
LANGUAGE plpgsql AS {_DOLLAR_TAG}
BEGIN
  -- Values are compared as text: it works for every type, json included.
  IF TG_OP = 'INSERT' THEN
    IF {new} IS NULL THEN
      {new} := {to_new};  -- old code wrote {self.old}
    ELSIF {to_new}::text IS DISTINCT FROM {new}::text THEN
      {old} := {to_old};  -- new code wrote {self.new}
    END IF;
  ELSIF {new}::text IS DISTINCT FROM {prev_new}::text THEN
    -- new code changed {self.new} (it wins if both changed)
    IF {to_new}::text IS DISTINCT FROM {new}::text THEN
      {old} := {to_old};
    END IF;
  ELSIF {old}::text IS DISTINCT FROM {prev_old}::text
     OR ({new} IS NULL AND {old} IS NOT NULL) THEN
    -- old code changed {self.old}, or a row the backfill has not reached yet
    {new} := {to_new};
  END IF;
  RETURN NEW;
END
{_DOLLAR_TAG};

CREATE TRIGGER {self.trigger}
  BEFORE INSERT OR UPDATE ON {self.table.sql}
  FOR EACH ROW EXECUTE FUNCTION {self.function}();"""  # noqa: S608
        if body.count(_DOLLAR_TAG) != 2:
            raise UsageError(f"an expression contains {_DOLLAR_TAG}, which the trigger body uses")
        return body

    def drop(self) -> str:
        return (
            f"DROP TRIGGER IF EXISTS {self.trigger} ON {self.table.sql};\n"
            f"DROP FUNCTION IF EXISTS {self.function}();"
        )


def _row_expression(expr: Any) -> str:
    """The expression as the trigger writes it: ``NEW.col``, or ``(CAST(new.col AS t))``."""
    if isinstance(expr, ast.ColumnRef):
        fields: Any = expr.fields
        return f"NEW.{quote_ident(fields[0].sval)}"
    return f"({render_expression(expr, row='new')})"


def _check_name(table: _Table, column: str) -> str:
    return limit_name(f"{table.name}_{column}_not_null")


def _bare(column: str) -> Any:
    return parse_expression(quote_ident(column), "column", allow_columns=True)


def _cast(column: str, type_sql: str) -> Any:
    return parse_expression(
        f"CAST({quote_ident(column)} AS {type_sql})", "cast", allow_columns=True
    )


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class RenameColumn:
    """``migrate new rename-column``: ``old`` becomes ``new`` without downtime.

    ``type`` is the column's type; ``not_null`` and ``default`` describe the
    old column so the new one ends up the same; ``warnings`` are dependent
    objects (indexes, constraints) the CLI found that the set does not move.
    """

    table: str
    old: str
    new: str
    type: str
    not_null: bool = False
    default: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChangeType:
    """``migrate new change-type``: ``column`` gets ``new_type`` through a new column.

    ``using`` converts the old value (an expression over the row's columns,
    like ALTER ... USING); ``reverse_using`` converts back for old code.
    ``restore_name`` appends a rename of the new column back to ``column``.
    """

    table: str
    column: str
    new_type: str
    old_type: str
    new_column: str | None = None
    using: str | None = None
    reverse_using: str | None = None
    not_null: bool = False
    default: str | None = None
    restore_name: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetNotNull:
    """``migrate new set-not-null``; ``default`` also fills the existing NULLs."""

    table: str
    column: str
    default: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass(frozen=True, slots=True)
class AddIndex:
    """``migrate new add-index``: one CREATE INDEX CONCURRENTLY."""

    table: str
    columns: tuple[str, ...]
    unique: bool = False
    name: str | None = None
    method: str | None = None
    where: str | None = None


@dataclass(frozen=True, slots=True)
class DropColumn:
    """``migrate new drop-column``; with ``type`` the down recreates it (empty, nullable)."""

    table: str
    column: str
    type: str | None = None


@dataclass(frozen=True, slots=True)
class Template:
    """``migrate new NAME --phase P``: an empty file to fill in."""

    name: str
    phase: Phase


Request = RenameColumn | ChangeType | SetNotNull | AddIndex | DropColumn | Template


def generate(request: Request, *, existing: Iterable[str], now: datetime) -> GeneratedSet:
    """The files for ``request``, numbered after ``existing`` (file names) at ``now``."""
    match request:
        case RenameColumn():
            return _rename_column(request, existing, now)
        case ChangeType():
            return _change_type(request, existing, now)
        case SetNotNull():
            return _set_not_null(request, existing, now)
        case AddIndex():
            return _add_index(request, existing, now)
        case DropColumn():
            return _drop_column(request, existing, now)
        case Template():
            return _template(request, existing, now)
    raise TypeError(f"unknown request {request!r}")  # pragma: no cover


def _check_batch_size(batch_size: int) -> None:
    if not 1 <= batch_size <= 1_000_000:
        raise UsageError(f"--batch-size: expected 1..1000000 rows, got {batch_size}")


def _warnings_text(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    return "\n\nWARNING, not handled by this set:\n" + "\n".join(f"* {w}" for w in warnings)


# --------------------------------------------------------------------------- column moves


@dataclass(frozen=True, slots=True)
class _Move:
    """Move the data of ``old`` into ``new`` (same or other type) with a sync trigger."""

    table: _Table
    old: str
    new: str
    new_type: str
    old_type: str
    sync: _Sync
    backfill_value: str  # expression over the row for the backfill's SET
    not_null: bool
    default: str | None  # for the new column, set in contract
    old_default: str | None  # the old column's, restored by the down of contract
    batch_size: int
    warnings: tuple[str, ...] = field(default=())

    @property
    def check(self) -> str:
        return quote_ident(_check_name(self.table, self.new))

    def drafts(self, title: str, slug_base: str) -> list[_Draft]:
        t, old, new = self.table, quote_ident(self.old), quote_ident(self.new)
        col = f"{t.name}.{self.old}"
        drafts: list[_Draft] = []

        def expand(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
            explanation = (
                f"Adds {self.new} ({self.new_type}) next to {self.old} and a trigger that "
                f"keeps the two equal on every INSERT and UPDATE, whichever one a writer "
                f"sets: the running code (reading and writing {self.old}) and the new code "
                f"(reading and writing {self.new}) can serve traffic side by side. If a "
                f"writer sets both to different values, {self.new} wins."
            )
            up = [f"ALTER TABLE {t.sql} ADD COLUMN {new} {self.new_type};"]
            if self.not_null:
                explanation += (
                    f"\n\n{self.old} is NOT NULL, so {self.new} gets a CHECK ... NOT VALID: "
                    f"the trigger fills {self.new} on every write, so new rows pass, and "
                    "existing rows are checked later without blocking writes."
                )
                up.append(
                    f"ALTER TABLE {t.sql} ADD CONSTRAINT {self.check}\n"
                    f"  CHECK ({new} IS NOT NULL) NOT VALID;"
                )
            explanation += _warnings_text(self.warnings)
            explanation += (
                f"\n\nAfter this migration: run {names[1]} (the backfill) right away. Do not "
                f"let code read {self.new} before the backfill has finished: older rows "
                "still have NULL there until then."
            )
            up.append(self.sync.create())
            down = [
                self.sync.drop(),
                f"-- bluegreen:ignore ban-drop-column undoing this expand: the code that "
                f"uses {self.new} no longer serves traffic\n"
                f"ALTER TABLE {t.sql} DROP COLUMN IF EXISTS {new};",
            ]
            return explanation, "\n\n".join(up), "\n".join(down), None

        drafts.append(_Draft(f"{slug_base}_expand", Phase.EXPAND, title, expand))

        def migrate(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
            explanation = (
                f"Copies {self.old} into {self.new} for the rows written before {names[0]}, in "
                "short batches by primary key (the backfill directive): each batch is its "
                "own transaction, progress is saved with it, and a rerun resumes after the "
                "last finished batch. Rows written since the expand phase are already in "
                "sync (trigger), so the WHERE clause skips them; running it twice is harmless."
                "\n\n"
                f"After this migration: every row has {self.new} = {self.old}. Deploy the code "
                f"that reads and writes {self.new} only; the trigger keeps the running code "
                f"that uses {self.old} correct while both versions serve traffic."
            )
            up = _backfill_sql(t, self.new, self.backfill_value, self.old, self.batch_size)
            down = _nothing_to_undo(
                f"the copied values go away with {self.new} when {names[0]} is rolled back"
            )
            return explanation, up, down, None

        drafts.append(_Draft(f"{slug_base}_backfill", Phase.MIGRATE, title, migrate))

        if self.not_null:

            def validate(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
                explanation = (
                    f"Validates CHECK ({self.new} IS NOT NULL) on the existing rows. VALIDATE "
                    "takes a SHARE UPDATE EXCLUSIVE lock: reads and writes go on during the "
                    "scan; it is its own migration so the scan never runs under a stronger "
                    f"lock. It fails if the backfill left a NULL ({self.old} was NULL "
                    "somewhere): fix those rows and rerun."
                )
                up = f"ALTER TABLE {t.sql} VALIDATE CONSTRAINT {self.check};"
                down = _nothing_to_undo(
                    f"the constraint goes away with {self.new} when {names[0]} is rolled back"
                )
                return explanation, up, down, None

            drafts.append(_Draft(f"{slug_base}_validate", Phase.MIGRATE, title, validate))

        def contract(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
            explanation = (
                f"Run only once no running version of the app uses {self.old} (the old "
                "colour drained and not coming back): from here on a read or write of "
                f"{self.old} fails. This migration:\n"
            )
            up = []
            if self.not_null:
                # First, before any statement takes ACCESS EXCLUSIVE on the table: a scan
                # after one would run with reads and writes blocked until the commit.
                explanation += (
                    f"* validates the CHECK on {self.new} first: a no-op after {names[2]}; "
                    "when this migration is re-applied after its down it scans the table "
                    "under SHARE UPDATE EXCLUSIVE, before any statement here blocks reads "
                    "and writes\n"
                )
                up.append(f"ALTER TABLE {t.sql} VALIDATE CONSTRAINT {self.check};")
            explanation += "* drops the sync trigger and its function"
            up.append(self.sync.drop())
            if self.default is not None:
                explanation += f"\n* gives {self.new} the default {self.old} had"
                up.append(f"ALTER TABLE {t.sql} ALTER COLUMN {new} SET DEFAULT {self.default};")
            if self.not_null:
                explanation += (
                    f"\n* makes {self.new} NOT NULL: PostgreSQL 12+ skips the table scan "
                    "thanks to the validated CHECK, which is then dropped as redundant"
                )
                up.append(
                    f"ALTER TABLE {t.sql} ALTER COLUMN {new} SET NOT NULL;\n"
                    f"ALTER TABLE {t.sql} DROP CONSTRAINT IF EXISTS {self.check};"
                )
            up.append(f"ALTER TABLE {t.sql} DROP COLUMN {old};")
            explanation += (
                f"\n* drops {col} (brief ACCESS EXCLUSIVE lock, no table rewrite)"
                f"\n\nDown: re-adds {self.old}"
                + (" with its default" if self.old_default is not None else "")
                + f" and the trigger, and copies the data back in batches, so code using "
                f"{self.old} can run again. The column comes back nullable; indexes and "
                f"constraints that were on {self.old} are not recreated."
            )
            re_add = f"ALTER TABLE {t.sql} ADD COLUMN {old} {self.old_type};"
            if self.old_default is not None:
                # A separate statement: a DEFAULT in ADD COLUMN would fill every existing
                # row with it, and the backfill below would then skip them.
                re_add += (
                    f"\nALTER TABLE {t.sql} ALTER COLUMN {old} SET DEFAULT {self.old_default};"
                )
            down = [
                re_add,
                self.sync.create(),
                "-- bluegreen:ignore ban-data-change-outside-migrate undoing the contract "
                "means copying the data back\n"
                + _backfill_sql(
                    t, self.old, render_expression(self.sync.to_old), self.new, self.batch_size
                ),
            ]
            return explanation, "\n".join(up), "\n\n".join(down), None

        drafts.append(_Draft(f"{slug_base}_contract", Phase.CONTRACT, title, contract))
        return drafts


def _column_move(
    table: _Table,
    old: str,
    new: str,
    old_type: str,
    new_type: str,
    to_new: Any,
    to_old: Any,
    *,
    not_null: bool,
    default: str | None,
    old_default: str | None,
    batch_size: int,
    warnings: tuple[str, ...],
) -> _Move:
    if old == new:
        raise UsageError(f"the new column name is the old one ({old!r}); pick another name")
    return _Move(
        table=table,
        old=old,
        new=new,
        new_type=new_type,
        old_type=old_type,
        sync=_Sync(table, old, new, to_new, to_old),
        backfill_value=render_expression(to_new),
        not_null=not_null,
        default=default,
        old_default=old_default,
        batch_size=batch_size,
        warnings=warnings,
    )


def _move_steps(move: _Move, names: Sequence[str]) -> list[str]:
    contract = names[-1]
    middle = names[1:-1]
    return [
        f"apply {names[0]} (expand) while the current version serves all traffic",
        f"apply {' then '.join(middle)} (migrate); wait until the backfill has finished",
        f"deploy the version that reads and writes {move.new}; shift traffic to it",
        f"apply {contract} (contract) once nothing uses {move.old} any more",
    ]


def _rename_column(request: RenameColumn, existing: Iterable[str], now: datetime) -> GeneratedSet:
    _check_batch_size(request.batch_size)
    table = _Table(parse_table(request.table))
    old = parse_column(request.old, "old column")
    new = parse_column(request.new, "new column")
    type_sql = parse_type(request.type)
    default = None
    if request.default is not None:
        default = render_expression(
            parse_expression(request.default, "default", allow_columns=False)
        )
    move = _column_move(
        table, old, new, type_sql, type_sql, _bare(old), _bare(new),
        not_null=request.not_null, default=default, old_default=default,
        batch_size=request.batch_size, warnings=request.warnings,
    )  # fmt: skip
    title = f"Rename {table.name}.{old} to {new} without downtime"
    drafts = move.drafts(title, slug("rename", table.name, old, "to", new))
    return _assemble([drafts], lambda names: _move_steps(move, names[0]), existing, now)


def _change_type(request: ChangeType, existing: Iterable[str], now: datetime) -> GeneratedSet:
    _check_batch_size(request.batch_size)
    table = _Table(parse_table(request.table))
    column = parse_column(request.column)
    new_type = parse_type(request.new_type, "type")
    old_type = parse_type(request.old_type, "old type")
    type_slug = slug(new_type)
    new_column = (
        parse_column(request.new_column, "new column")
        if request.new_column
        else limit_name(f"{column}_{type_slug}")
    )
    to_new = (
        parse_expression(request.using, "--using", allow_columns=True)
        if request.using
        else _cast(column, new_type)
    )
    to_old = (
        parse_expression(request.reverse_using, "--reverse-using", allow_columns=True)
        if request.reverse_using
        else _cast(new_column, old_type)
    )
    default = old_default = None
    if request.default is not None:
        parsed = parse_expression(request.default, "default", allow_columns=False)
        old_default = render_expression(parsed)
        default = f"CAST({old_default} AS {new_type})"
    warnings = (
        *request.warnings,
        f"a value of {column} that cannot be converted to {new_type} makes the old code's "
        f"write fail while the trigger is in place, and a value of {new_column} that does not "
        f"fit {old_type} makes the new code's write fail: check the data first, or give "
        "--using / --reverse-using expressions that convert safely",
    )
    move = _column_move(
        table, column, new_column, old_type, new_type, to_new, to_old,
        not_null=request.not_null, default=default, old_default=old_default,
        batch_size=request.batch_size, warnings=warnings,
    )  # fmt: skip
    title = f"Change {table.name}.{column} from {old_type} to {new_type} through {new_column}"
    drafts = move.drafts(title, slug("retype", table.name, column, "to", type_slug))
    if not request.restore_name:

        def steps(names: Sequence[Sequence[str]]) -> list[str]:
            return [
                *_move_steps(move, names[0]),
                f"optional: get the name {column} back with "
                f"`bluegreen migrate new rename-column {table.sql} {new_column} {column} "
                f"--type '{new_type}'` (another expand/migrate/contract round)",
            ]

        return _assemble([drafts], steps, existing, now)

    back = _column_move(
        table, new_column, column, new_type, new_type, _bare(new_column), _bare(column),
        not_null=request.not_null, default=default, old_default=default,
        batch_size=request.batch_size, warnings=(),
    )  # fmt: skip
    back_title = f"Rename {table.name}.{new_column} back to {column} (after the type change)"
    back_drafts = back.drafts(back_title, slug("rename", table.name, new_column, "to", column))

    def steps_with_rename(names: Sequence[Sequence[str]]) -> list[str]:
        return [*_move_steps(move, names[0]), *_move_steps(back, names[1])]

    return _assemble([drafts, back_drafts], steps_with_rename, existing, now)


# --------------------------------------------------------------------------- set-not-null


def _set_not_null(request: SetNotNull, existing: Iterable[str], now: datetime) -> GeneratedSet:
    _check_batch_size(request.batch_size)
    table = _Table(parse_table(request.table))
    column = parse_column(request.column)
    col, t = quote_ident(column), table.sql
    check = quote_ident(_check_name(table, column))
    default = None
    if request.default is not None:
        default = render_expression(
            parse_expression(request.default, "--default", allow_columns=False)
        )
    title = f"Make {table.name}.{column} NOT NULL without downtime"
    base = slug("not_null", table.name, column)
    drafts: list[_Draft] = []

    def expand(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
        explanation = (
            f"Adds CHECK ({column} IS NOT NULL) NOT VALID: PostgreSQL enforces it for every "
            "row written from now on, without scanning the existing ones (the lock is "
            "brief). Apply it only when every running version of the app writes a "
            f"non-NULL {column} on INSERT and never sets it to NULL"
            + (", or leaves it out and gets the default set here" if default else "")
            + ": otherwise their writes start failing. If the version being rolled out is "
            f"the first to write {column}, apply this set in the next release, once no "
            "older version runs."
        )
        up = []
        down = [f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {check};"]
        if default is not None:
            explanation += (
                f"\n\nAlso sets DEFAULT {default} (for INSERTs that leave {column} out); the "
                "down drops that default."
            )
            up.append(f"ALTER TABLE {t} ALTER COLUMN {col} SET DEFAULT {default};")
            down.append(f"ALTER TABLE {t} ALTER COLUMN {col} DROP DEFAULT;")
        up.append(f"ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL) NOT VALID;")
        return explanation, "\n".join(up), "\n".join(down), None

    drafts.append(_Draft(f"{base}_expand", Phase.EXPAND, title, expand))

    if default is not None:

        def backfill(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
            explanation = (
                f"Sets {column} = {default} on the rows that still have NULL, in short "
                "batches by primary key (each batch its own transaction; a rerun resumes "
                "after the last finished batch; running it twice is harmless)."
            )
            up = (
                f"-- bluegreen:backfill batch-size={request.batch_size}\n"
                f"UPDATE {t} SET {col} = {default} WHERE {col} IS NULL;"
            )
            down = _nothing_to_undo(
                "which rows were NULL is not recorded, and the filled values are valid either way"
            )
            return explanation, up, down, None

        drafts.append(_Draft(f"{base}_backfill", Phase.MIGRATE, title, backfill))

    fix = "fix those rows" + (" (or generate this set with --default)" if default is None else "")

    def validate(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
        explanation = (
            "Checks the existing rows against the constraint. VALIDATE CONSTRAINT takes a "
            "SHARE UPDATE EXCLUSIVE lock: reads and writes go on during the scan. It is its "
            "own migration so the scan never runs under a stronger lock. It fails if a NULL "
            f"is left: {fix} and rerun."
        )
        up = f"ALTER TABLE {t} VALIDATE CONSTRAINT {check};"
        down = _nothing_to_undo(f"the constraint is dropped by the down of {names[0]}")
        return explanation, up, down, None

    drafts.append(_Draft(f"{base}_validate", Phase.MIGRATE, title, validate))

    def contract(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
        explanation = (
            f"SET NOT NULL takes an ACCESS EXCLUSIVE lock but, because a validated CHECK "
            f"({column} IS NOT NULL) exists, PostgreSQL 12+ skips the table scan, so the lock "
            "is brief; the CHECK is then redundant and dropped. The VALIDATE first is a no-op "
            f"after {names[-2]}; it only scans (without blocking writes) if this migration is "
            "re-applied after its down."
            "\n\n"
            f"Down: {column} becomes nullable again and the CHECK comes back NOT VALID."
        )
        up = (
            f"ALTER TABLE {t} VALIDATE CONSTRAINT {check};\n"
            f"ALTER TABLE {t} ALTER COLUMN {col} SET NOT NULL;\n"
            f"ALTER TABLE {t} DROP CONSTRAINT {check};"
        )
        down = (
            f"ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL) NOT VALID;\n"
            f"ALTER TABLE {t} ALTER COLUMN {col} DROP NOT NULL;"
        )
        return explanation, up, down, None

    drafts.append(_Draft(f"{base}_contract", Phase.CONTRACT, title, contract))

    def steps(groups: Sequence[Sequence[str]]) -> list[str]:
        names = groups[0]
        return [
            f"make sure every running version writes a non-NULL {column}",
            f"apply {names[0]} (expand)",
            f"apply {' then '.join(names[1:-1])} (migrate)",
            f"apply {names[-1]} (contract)",
        ]

    return _assemble([drafts], steps, existing, now)


# --------------------------------------------------------------------------- add-index


def _add_index(request: AddIndex, existing: Iterable[str], now: datetime) -> GeneratedSet:
    table = _Table(parse_table(request.table))
    if not request.columns:
        raise UsageError("add-index: name at least one column")
    elements: list[str] = []
    name_parts: list[str] = []
    for value in request.columns:
        stmt = _parse_one(f"CREATE INDEX i ON t ({value})", "index column", value)
        params = stmt.indexParams if isinstance(stmt, ast.IndexStmt) else None
        if not params or len(params) != 1:
            raise UsageError(f"index column: {value!r} is not one column or expression")
        element = params[0]
        elements.append(RawStream()(element))
        name_parts.append(element.name or "expr")
    method = parse_column(request.method, "--using") if request.method else None
    where = (
        render_expression(parse_expression(request.where, "--where", allow_columns=True))
        if request.where
        else None
    )
    suffix = "key" if request.unique else "idx"
    name = (
        parse_column(request.name, "--name")
        if request.name
        else limit_name("_".join([table.name, *name_parts, suffix]))
    )
    index = quote_qualified((*table.parts[:-1], name))
    create = (
        f"CREATE {'UNIQUE ' if request.unique else ''}INDEX CONCURRENTLY IF NOT EXISTS "
        f"{quote_ident(name)} ON {table.sql}"
        + (f" USING {quote_ident(method)}" if method else "")
        + f" ({', '.join(elements)})"
        + (f" WHERE {where}" if where else "")
        + ";"
    )
    _parse_one(create, "index", create)  # everything above went through the parser; once more

    def render(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
        explanation = (
            "CREATE INDEX CONCURRENTLY builds the index without blocking reads or writes "
            "(it waits for running transactions and scans the table twice, so it takes "
            "longer). It cannot run inside a transaction, so it is alone in its migration "
            "and the runner runs it outside one. If the build fails it leaves an INVALID "
            "index behind, which IF NOT EXISTS would keep: the runner drops such an index "
            "(concurrently) before it retries."
        )
        if request.unique:
            explanation += (
                "\n\nUNIQUE: the build fails if duplicates exist, and from the moment the "
                "build starts, writes that would create a duplicate fail."
            )
        down = f"DROP INDEX CONCURRENTLY IF EXISTS {index};"
        return explanation, create, down, None

    title = f"Add index {name} on {table.name}"
    draft = _Draft(slug("index", name), Phase.EXPAND, title, render)
    return _assemble(
        [[draft]], lambda names: [f"apply {names[0][0]} (expand) at any time"], existing, now
    )


# --------------------------------------------------------------------------- drop-column


def _drop_column(request: DropColumn, existing: Iterable[str], now: datetime) -> GeneratedSet:
    table = _Table(parse_table(request.table))
    column = parse_column(request.column)
    type_sql = parse_type(request.type) if request.type else None

    def render(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
        explanation = (
            f"Grace period first. Apply only when no version of the app that reads or writes "
            f"{column} can run again: the old colour drained, the rollback window over, and "
            "every deploy since has been stable for a while (the seed says days or weeks). "
            f"Check the code too: ORMs that list every column (SELECT *, cached column lists) "
            f"break when {column} disappears; make them ignore it first."
            "\n\n"
            "DROP COLUMN takes an ACCESS EXCLUSIVE lock briefly and does not rewrite the table; "
            "the space is reclaimed as rows are rewritten."
        )
        if type_sql is None:
            reason = (
                f"dropping {table.name}.{column} deletes its data; generate with --type to get "
                "a down that recreates it empty"
            )
            return (
                explanation,
                f"ALTER TABLE {table.sql} DROP COLUMN {quote_ident(column)};",
                None,
                reason,
            )
        explanation += (
            f"\n\nDown: recreates {column} as a nullable {type_sql}, empty: the data is gone."
        )
        up = f"ALTER TABLE {table.sql} DROP COLUMN {quote_ident(column)};"
        down = f"ALTER TABLE {table.sql} ADD COLUMN {quote_ident(column)} {type_sql};"
        return explanation, up, down, None

    title = f"Drop {table.name}.{column}"
    draft = _Draft(slug("drop", table.name, column), Phase.CONTRACT, title, render)
    return _assemble(
        [[draft]],
        lambda names: [f"apply {names[0][0]} (contract) after the grace period"],
        existing,
        now,
    )


# --------------------------------------------------------------------------- template

_PHASE_HELP: Final = {
    Phase.EXPAND: (
        "Expand: add, never remove or rename. Both the running version of the app and the "
        "next one must work with the schema after this migration (new tables, nullable "
        "columns, indexes built CONCURRENTLY in their own migration)."
    ),
    Phase.MIGRATE: (
        "Migrate: move data. Put a backfill directive comment on the line before a big UPDATE to "
        "run it in short batches; keep its WHERE clause false for rows already done, so a "
        "rerun is harmless."
    ),
    Phase.CONTRACT: (
        "Contract: remove what no running version uses any more (old columns, tables, "
        "triggers). Runs once the old colour is drained and not coming back."
    ),
}


def _template(request: Template, existing: Iterable[str], now: datetime) -> GeneratedSet:
    name = slug(request.name)

    def render(names: Sequence[str]) -> tuple[str, str, str | None, str | None]:
        up = "-- Write the SQL here; the up section must not stay empty."
        # No down section: until someone writes one the file is irreversible, so a
        # forgotten down refuses to run instead of silently undoing nothing.
        explanation = (
            f"{_PHASE_HELP[request.phase]}\n\n"
            "Without a down section this migration is irreversible. To make it reversible, "
            "end the file with a line '-- bluegreen:down' followed by the SQL that undoes "
            "the up section, or by a comment saying why there is nothing to undo "
            "('-- nothing to undo: ...'). If it cannot be undone, say why in the header: "
            "'-- bluegreen:irreversible <reason>'."
        )
        return explanation, up, None, None

    draft = _Draft(name, request.phase, request.name, render)
    return _assemble([[draft]], lambda names: [f"edit {names[0][0]}"], existing, now)
