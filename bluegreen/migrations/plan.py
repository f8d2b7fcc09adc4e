"""The migration runner's decisions, as pure functions (no I/O, no clock).

Theory of operation
-------------------
A run is: read the files and the history table, decide what to run, then run
it step by step. Everything decided lives here so it can be tested without a
database; ``runner.py`` only executes the decisions.

* **State of a version** comes from its latest history row (one row per
  attempt): ``up/applied`` → applied; ``down/rolled_back`` → pending again;
  ``up/failed`` or ``up/interrupted`` → not applied, retried (resumed) by the
  next ``up``; ``down/failed|interrupted`` → still applied, retried by the
  next ``down``; ``running`` whose server backend is gone → interrupted.
* **Steps.** A section is split into statements (pglast) and grouped:
  consecutive statements that may run in a transaction form one
  ``transaction`` step; a statement PostgreSQL refuses inside a transaction
  block (``CREATE INDEX CONCURRENTLY``, ``VACUUM``, ...) is a ``standalone``
  step; an UPDATE marked ``-- bluegreen:backfill`` is a ``backfill`` step.
  The history row counts committed steps, so a failed or killed run can be
  resumed at the first step that did not commit.
* **Order.** Files run in version order. Phases may lag: a ``contract``
  migration can wait (days, as the seed says) while newer ``expand``
  migrations are applied. So a pending file is *out of order* only when a
  newer file of the same or a later phase is already applied; a pending file
  behind newer files of earlier phases only is *deferred*, which is normal.
  ``up`` refuses to create or apply out-of-order files unless told to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from pglast import ast

from bluegreen.errors import (
    ChecksumMismatchError,
    MigrationError,
    MigrationFileError,
    MigrationOrderError,
)
from bluegreen.migrations.files import MigrationFile, Phase
from bluegreen.migrations.sql import Statement, parse_statements

PHASE_ORDER: Final = {Phase.EXPAND: 0, Phase.MIGRATE: 1, Phase.CONTRACT: 2}


class Direction(StrEnum):
    """Which section of a migration runs."""

    UP = "up"
    DOWN = "down"


class Outcome(StrEnum):
    """The ``outcome`` column of a history row (one row per attempt)."""

    RUNNING = "running"
    APPLIED = "applied"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class MigrationState(StrEnum):
    """Where one version stands, from its file and its latest history row."""

    PENDING = "pending"
    APPLIED = "applied"
    RUNNING = "running"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ROLLBACK_FAILED = "rollback_failed"
    MISSING = "missing"  # applied, but the file is gone


#: States in which the schema change is (at least partly) in the database.
APPLIED_STATES: Final = frozenset(
    {MigrationState.APPLIED, MigrationState.ROLLBACK_FAILED, MigrationState.MISSING}
)
#: States that ``up`` (re)runs.
RUNNABLE_STATES: Final = frozenset(
    {MigrationState.PENDING, MigrationState.FAILED, MigrationState.INTERRUPTED}
)


class StepKind(StrEnum):
    """How a step runs."""

    TRANSACTION = "transaction"
    STANDALONE = "standalone"
    BACKFILL = "backfill"


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Step:
    """Statements run together: one transaction, one standalone statement or one backfill."""

    number: int  # 1-based within the section
    kind: StepKind
    statements: tuple[Statement, ...]
    reason: str | None = None  # why it runs outside a transaction
    # waiting for its lock holds up no application query (see waits_without_blocking)
    nonblocking: bool = False

    @property
    def line(self) -> int:
        """File line of the first statement."""
        return self.statements[0].line

    @property
    def summary(self) -> str:
        """The first statement, on one line, shortened."""
        text = summarize_sql(self.statements[0].text)
        more = len(self.statements) - 1
        return f"{text} (+{more} more)" if more else text


def summarize_sql(text: str, width: int = 72) -> str:
    """One-line, shortened SQL for progress lines and messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _walk(node: Any) -> Iterator[Any]:
    """Every pglast node under ``node`` (itself included)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            yield item
            for name in type(item).__slots__:  # type: ignore[attr-defined] # generated nodes
                stack.append(getattr(item, name, None))
        elif isinstance(item, tuple | list):
            stack.extend(item)


def tables_of(statement: Statement) -> tuple[str, ...]:
    """Every table (``schema.name`` or ``name``) a statement names, in order."""
    names = []
    for node in _walk(statement.node):
        if isinstance(node, ast.RangeVar) and node.relname:
            names.append(f"{node.schemaname}.{node.relname}" if node.schemaname else node.relname)
    # _walk is depth-first from the end; keep the reading order stable
    return tuple(dict.fromkeys(reversed(names)))


def _option_enabled(options: Sequence[Any] | None, name: str) -> bool:
    """Whether a ``(NAME [bool])`` option list turns ``name`` on."""
    for option in options or ():
        if isinstance(option, ast.DefElem) and option.defname == name:
            arg = option.arg
            if arg is None:
                return True
            value = getattr(arg, "sval", None) or getattr(arg, "ival", None) or arg
            return str(value).lower() not in ("false", "off", "0", "no")
    return False


_REINDEX_MULTI: Final = frozenset({"REINDEX_OBJECT_SCHEMA", "REINDEX_OBJECT_SYSTEM"})
_REINDEX_DATABASE: Final = "REINDEX_OBJECT_DATABASE"


def transaction_restriction(node: Any, server_version_num: int) -> str | None:
    """Why PostgreSQL refuses ``node`` inside a transaction block, or None.

    These are the statements whose implementation calls
    ``PreventInTransactionBlock`` (plus ``ALTER TYPE ... ADD VALUE`` before
    PostgreSQL 12). The enum case from 12 on depends on later statements and
    is handled by :func:`build_steps`.
    """
    match node:
        case ast.IndexStmt(concurrent=True):
            return "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
        case ast.DropStmt(concurrent=True):
            return "DROP INDEX CONCURRENTLY cannot run inside a transaction block"
        case ast.ReindexStmt():
            if _option_enabled(node.params, "concurrently"):
                return "REINDEX CONCURRENTLY cannot run inside a transaction block"
            kind = getattr(node.kind, "name", str(node.kind))
            if kind in _REINDEX_MULTI or kind == _REINDEX_DATABASE:
                return "REINDEX SCHEMA/SYSTEM/DATABASE cannot run inside a transaction block"
        case ast.VacuumStmt(is_vacuumcmd=True):
            return "VACUUM cannot run inside a transaction block"
        case ast.ClusterStmt(relation=None):
            return "CLUSTER without a table cannot run inside a transaction block"
        case ast.CreatedbStmt() | ast.DropdbStmt():
            return "CREATE/DROP DATABASE cannot run inside a transaction block"
        case ast.AlterDatabaseStmt() if _has_option(node.options, "tablespace"):
            return "ALTER DATABASE SET TABLESPACE cannot run inside a transaction block"
        case ast.CreateTableSpaceStmt() | ast.DropTableSpaceStmt():
            return "CREATE/DROP TABLESPACE cannot run inside a transaction block"
        case ast.AlterSystemStmt():
            return "ALTER SYSTEM cannot run inside a transaction block"
        case ast.DiscardStmt():
            return "DISCARD cannot run inside a transaction block"
        case (
            ast.CreateSubscriptionStmt() | ast.DropSubscriptionStmt() | ast.AlterSubscriptionStmt()
        ):
            # Only some forms (create_slot, refresh with copy_data, dropping a
            # slot) refuse a transaction; running each on its own is always valid.
            return "subscription commands that touch replication slots cannot run in a transaction"
        case ast.AlterTableStmt():
            for cmd in node.cmds or ():
                if isinstance(cmd.def_, ast.PartitionCmd) and cmd.def_.concurrent:
                    return "DETACH PARTITION CONCURRENTLY cannot run inside a transaction block"
        case ast.AlterEnumStmt(oldVal=None) if server_version_num < 120000:
            return (
                "before PostgreSQL 12, ALTER TYPE ... ADD VALUE cannot run in a transaction block"
            )
    return None


def waits_without_blocking(node: Any) -> bool:
    """Whether a statement outside a transaction can wait for locks without stalling the app.

    ``CREATE/DROP INDEX CONCURRENTLY``, ``REINDEX CONCURRENTLY``, ``DETACH
    PARTITION CONCURRENTLY`` and plain ``VACUUM`` take SHARE UPDATE EXCLUSIVE,
    which no read or write conflicts with, then wait for older transactions;
    ``ALTER TYPE ... ADD VALUE`` locks only the type. Queries arriving while
    they wait do not queue behind them, so they may wait longer than DDL that
    takes a strong lock. (Inside a transaction nothing qualifies: earlier
    statements may already hold locks the application needs.)
    """
    match node:
        case ast.IndexStmt(concurrent=True) | ast.DropStmt(concurrent=True):
            return True
        case ast.ReindexStmt():
            return _option_enabled(node.params, "concurrently")
        case ast.VacuumStmt(is_vacuumcmd=True):
            return not _option_enabled(node.options, "full")
        case ast.AlterTableStmt():
            cmds = node.cmds or ()
            return bool(cmds) and all(
                isinstance(c.def_, ast.PartitionCmd) and c.def_.concurrent for c in cmds
            )
        case ast.AlterEnumStmt(oldVal=None):
            return True
    return False


def _has_option(options: Sequence[Any] | None, name: str) -> bool:
    return any(isinstance(o, ast.DefElem) and o.defname == name for o in options or ())


def _type_name(names: Sequence[Any] | None) -> str:
    return ".".join(getattr(n, "sval", str(n)) for n in names or ())


def _uses_string(statement: Statement, value: str) -> bool:
    """Whether a string constant in ``statement`` is ``value`` or quotes it (a function body)."""
    quoted = "'" + value.replace("'", "''") + "'"
    for node in _walk(statement.node):
        text = node.sval if isinstance(node, ast.String) else None
        if text is not None and (text == value or quoted in text):
            return True
    return False


def _enum_value_used_later(
    add: Statement, later: Sequence[Statement], created_types: Collection[str]
) -> bool:
    """Whether a value added by ``add`` is used by a statement of the same transaction.

    From PostgreSQL 12, ``ALTER TYPE ... ADD VALUE`` may run in a transaction
    but the new value cannot be *used* before that transaction commits, unless
    the type itself was created in the same transaction.
    """
    if _type_name(add.node.typeName) in created_types:
        return False
    return any(_uses_string(other, add.node.newVal) for other in later)


def build_steps(
    statements: Sequence[Statement], *, server_version_num: int, source: str = "<sql>"
) -> tuple[Step, ...]:
    """Group statements into steps (see the module docstring)."""
    steps: list[Step] = []
    group: list[Statement] = []
    created_types: set[str] = set()

    def close_group() -> None:
        if group:
            steps.append(Step(len(steps) + 1, StepKind.TRANSACTION, tuple(group)))
            group.clear()
            created_types.clear()

    for index, statement in enumerate(statements):
        node = statement.node
        if isinstance(node, ast.TransactionStmt):
            raise MigrationFileError(
                f"{source}:{statement.line}: transaction control ({summarize_sql(statement.text)})"
                " is not allowed: the runner opens and commits transactions itself. "
                "Remove it; statements that cannot run in a transaction run on their own.",
            )
        if statement.directive("backfill") is not None:
            close_group()
            steps.append(Step(len(steps) + 1, StepKind.BACKFILL, (statement,), "batched backfill"))
            continue
        reason = transaction_restriction(node, server_version_num)
        if (
            reason is None
            and isinstance(node, ast.AlterEnumStmt)
            and node.oldVal is None
            and _enum_value_used_later(statement, statements[index + 1 :], created_types)
        ):
            reason = (
                f"the new enum value {node.newVal!r} is used later in this migration, and "
                "a value added in a transaction cannot be used before that transaction commits"
            )
        if reason is not None:
            close_group()
            steps.append(
                Step(
                    len(steps) + 1,
                    StepKind.STANDALONE,
                    (statement,),
                    reason,
                    nonblocking=waits_without_blocking(node),
                )
            )
            continue
        if isinstance(node, ast.CreateEnumStmt):
            created_types.add(_type_name(node.typeName))
        group.append(statement)
    close_group()
    return tuple(steps)


DOWN_SUFFIX: Final = ":down"  # a file name cannot contain ':', so no label ends like this


def backfill_key(label: str, direction: Direction) -> str:
    """The name a section's backfills save their progress under (``bluegreen_backfill_progress``).

    The up section's is the label; the down section's is ``<label>:down``, so a
    down's backfill never resumes from (or clears) the up's saved position.
    """
    return label if direction is Direction.UP else f"{label}{DOWN_SUFFIX}"


def split_backfill_key(key: str) -> tuple[str, Direction]:
    """``(label, direction)`` of a :func:`backfill_key`."""
    if key.endswith(DOWN_SUFFIX):
        return key[: -len(DOWN_SUFFIX)], Direction.DOWN
    return key, Direction.UP


def migration_steps(
    migration: MigrationFile, direction: Direction, *, server_version_num: int
) -> tuple[Step, ...]:
    """Parse and group one section of a migration file.

    A down section with no statement (only comments) has no steps: running it
    changes nothing and records the migration as rolled back.
    """
    section = migration.section(direction.value)
    if section is None:
        raise MigrationError(
            f"{migration.path}: {migration.label} has no down section: "
            f"{migration.irreversible_reason or 'it is irreversible'}",
            migration=migration.label,
        )
    statements = parse_statements(
        section.sql, first_line=section.first_line, source=str(migration.path)
    )
    if not statements and direction is Direction.DOWN:
        return ()  # only comments: reversible, nothing to undo
    if not statements:
        raise MigrationFileError(
            f"{migration.path}:{section.first_line}: the {direction} section has no SQL statement",
            migration=migration.label,
        )
    return build_steps(
        statements, server_version_num=server_version_num, source=str(migration.path)
    )


# --------------------------------------------------------------------------- history


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One attempt to run one migration, as stored in ``bluegreen_migrations``."""

    id: int
    version: int
    name: str
    phase: str
    direction: Direction
    checksum: str
    outcome: Outcome
    started_at: datetime
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    steps_total: int = 0
    steps_done: int = 0
    current_step: int | None = None
    run_by: str = ""
    runner_pid: int | None = None
    backend_pid: int | None = None
    tool_version: str = ""
    error: str | None = None
    file: str = ""  # the file name when it ran (0001_add_status_code.sql)

    @property
    def label(self) -> str:
        """The file name without ``.sql`` (``version_name`` if unknown)."""
        if self.file.endswith(".sql"):
            return self.file[: -len(".sql")]
        return f"{self.version}_{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "file": self.file,
            "phase": self.phase,
            "direction": self.direction.value,
            "checksum": self.checksum,
            "outcome": self.outcome.value,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_seconds": self.duration_seconds,
            "steps_total": self.steps_total,
            "steps_done": self.steps_done,
            "current_step": self.current_step,
            "run_by": self.run_by,
            "runner_pid": self.runner_pid,
            "backend_pid": self.backend_pid,
            "tool_version": self.tool_version,
            "error": self.error,
        }


def describe_progress(row: HistoryRow) -> str:
    """Which steps of an unfinished attempt committed, in words."""
    done = (
        f"steps 1-{row.steps_done} of {row.steps_total} committed"
        if row.steps_done > 1
        else f"step 1 of {row.steps_total} committed"
        if row.steps_done == 1
        else f"no step of {row.steps_total} committed"
    )
    if row.current_step is not None and row.current_step > row.steps_done:
        if row.outcome is Outcome.FAILED:
            done += f"; step {row.current_step} failed"
        else:
            done += f"; step {row.current_step} was running"
            done += " (if it was outside a transaction it may have finished)"
    return done


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One version: its file, its latest attempt and what that means."""

    version: int
    name: str
    phase: str
    state: MigrationState
    file: MigrationFile | None
    last: HistoryRow | None = None
    applied: HistoryRow | None = None  # the up/applied row, while applied
    checksum_changed: bool = False
    out_of_order: bool = False  # pending, but a newer same-or-later-phase file is applied
    deferred: bool = False  # pending behind newer files of earlier phases only (allowed)
    stale: bool = False  # history says running but the runner's backend is gone

    @property
    def label(self) -> str:
        """The file name without ``.sql``, or ``version_name`` when the file is gone."""
        return self.file.label if self.file is not None else f"{self.version}_{self.name}"

    @property
    def reversible(self) -> bool | None:
        """Whether a down section exists (None when the file is gone)."""
        return None if self.file is None else self.file.reversible

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "version": self.version,
            "name": self.name,
            "label": self.label,
            "phase": self.phase,
            "state": self.state.value,
            "reversible": self.reversible,
            "irreversible_reason": self.file.irreversible_reason if self.file else None,
            "checksum_changed": self.checksum_changed,
            "out_of_order": self.out_of_order,
            "deferred": self.deferred,
            "applied_at": self.applied.finished_at.isoformat()
            if self.applied and self.applied.finished_at
            else None,
            "last_attempt": self.last.to_dict() if self.last else None,
        }


def _state_of(last: HistoryRow, backend_alive: bool) -> tuple[MigrationState, bool]:
    """State from the latest row, and whether a ``running`` row is stale."""
    up = last.direction is Direction.UP
    match last.outcome:
        case Outcome.APPLIED:
            return MigrationState.APPLIED, False
        case Outcome.ROLLED_BACK:
            return MigrationState.PENDING, False
        case Outcome.FAILED:
            return (MigrationState.FAILED if up else MigrationState.ROLLBACK_FAILED), False
        case Outcome.INTERRUPTED:
            return (MigrationState.INTERRUPTED if up else MigrationState.ROLLBACK_FAILED), False
        case Outcome.RUNNING:
            if backend_alive:
                return MigrationState.RUNNING, False
            return (MigrationState.INTERRUPTED if up else MigrationState.ROLLBACK_FAILED), True


def analyse(
    files: Sequence[MigrationFile],
    rows: Iterable[HistoryRow],
    *,
    live_backends: Collection[int] = (),
) -> list[MigrationStatus]:
    """The status of every version found in the files or the history, by version.

    ``live_backends`` are the server pids still connected; a ``running`` row
    whose backend is not among them belongs to a runner that died.
    """
    latest: dict[int, HistoryRow] = {}
    applied_row: dict[int, HistoryRow] = {}
    for row in sorted(rows, key=lambda r: r.id):
        latest[row.version] = row
        if row.direction is Direction.UP and row.outcome is Outcome.APPLIED:
            applied_row[row.version] = row
    by_version = {m.version: m for m in files}
    drafts: list[MigrationStatus] = []
    for version in sorted(set(by_version) | set(latest)):
        m = by_version.get(version)
        last = latest.get(version)
        if last is None:
            assert m is not None  # noqa: S101 - the version came from one of the two maps
            drafts.append(
                MigrationStatus(version, m.name, m.phase.value, MigrationState.PENDING, m)
            )
            continue
        alive = last.backend_pid is not None and last.backend_pid in live_backends
        state, stale = _state_of(last, alive)
        applied = applied_row.get(version) if state in APPLIED_STATES else None
        if m is None and state in APPLIED_STATES:
            state = MigrationState.MISSING
        elif m is None and state in RUNNABLE_STATES:
            continue  # rolled back or never finished, and the file is gone: nothing to track
        reference = applied if applied is not None else last
        changed = m is not None and state in APPLIED_STATES and reference.checksum != m.checksum
        drafts.append(
            MigrationStatus(
                version,
                m.name if m else last.name,
                m.phase.value if m else last.phase,
                state,
                m,
                last,
                applied,
                checksum_changed=changed,
                stale=stale,
            )
        )
    return _mark_order(drafts)


def _phase_rank(phase: str) -> int:
    try:
        return PHASE_ORDER[Phase(phase)]
    except ValueError:
        return len(PHASE_ORDER)


def _mark_order(statuses: list[MigrationStatus]) -> list[MigrationStatus]:
    """Set ``out_of_order`` / ``deferred`` on pending versions behind applied ones."""
    applied = [s for s in statuses if s.state in APPLIED_STATES]
    marked: list[MigrationStatus] = []
    for s in statuses:
        if s.state in RUNNABLE_STATES:
            newer = [a for a in applied if a.version > s.version]
            blocking = [a for a in newer if _phase_rank(a.phase) >= _phase_rank(s.phase)]
            if blocking:
                s = _replace(s, out_of_order=True)
            elif newer:
                s = _replace(s, deferred=True)
        marked.append(s)
    return marked


def _replace(status: MigrationStatus, **changes: Any) -> MigrationStatus:
    return dataclasses.replace(status, **changes)


# --------------------------------------------------------------------------- problems


class Severity(StrEnum):
    """How bad a verify finding is: errors make ``verify`` exit 1."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something ``verify`` (and ``status``) reports about one version."""

    kind: str
    severity: Severity
    version: int
    label: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "severity": self.severity.value,
            "version": self.version,
            "label": self.label,
            "message": self.message,
        }


def problems(statuses: Sequence[MigrationStatus]) -> list[Problem]:
    """Checksum changes, missing files, out-of-order and unfinished runs, and gaps."""
    found: list[Problem] = []
    highest = max((s.version for s in statuses if s.state in APPLIED_STATES), default=None)
    for s in statuses:
        where = str(s.file.path) if s.file else s.label

        def add(kind: str, severity: Severity, message: str, s: MigrationStatus = s) -> None:
            found.append(Problem(kind, severity, s.version, s.label, message))

        if s.checksum_changed:
            add("checksum_mismatch", Severity.ERROR, _checksum_message(s))
        if s.state is MigrationState.MISSING:
            add(
                "missing_file",
                Severity.ERROR,
                f"{s.label} is applied but its file is gone from the directory; restore it "
                "(down and verify need it)",
            )
        if s.out_of_order:
            add(
                "out_of_order",
                Severity.ERROR,
                f"{where}: pending, but newer migrations of the same or a later phase are "
                f"applied (highest {highest}); apply it with 'up --out-of-order' once you "
                "have checked it does not conflict, or give it a newer version",
            )
        elif s.deferred:
            add(
                "gap",
                Severity.WARNING,
                f"{where}: {s.phase} migration pending behind newer applied migrations of "
                "earlier phases (deferred, as expand-migrate-contract allows)",
            )
        if s.last is not None and s.state is MigrationState.INTERRUPTED:
            how = "stopped without recording an outcome" if s.stale else "was interrupted"
            add(
                "interrupted",
                Severity.ERROR,
                f"{s.label}: the last 'up' by {s.last.run_by} {how}; "
                f"{describe_progress(s.last)}. 'up' resumes it",
            )
        if s.last is not None and s.state is MigrationState.FAILED:
            add(
                "failed",
                Severity.ERROR,
                f"{s.label}: the last 'up' failed ({describe_progress(s.last)}): "
                f"{s.last.error or 'no error recorded'}",
            )
        if s.last is not None and s.state is MigrationState.ROLLBACK_FAILED:
            add(
                "rollback_failed",
                Severity.ERROR,
                f"{s.label}: the last 'down' did not finish ({describe_progress(s.last)}): "
                f"{s.last.error or 'runner stopped'}; 'down' resumes it",
            )
        if s.last is not None and s.state is MigrationState.RUNNING:
            add(
                "running",
                Severity.WARNING,
                f"{s.label}: being run now by {s.last.run_by} (server pid {s.last.backend_pid})",
            )
    return found


def _checksum_message(s: MigrationStatus) -> str:
    recorded = s.applied.checksum if s.applied else s.last.checksum if s.last else "?"
    current = s.file.checksum if s.file else "?"
    where = str(s.file.path) if s.file else s.label
    return (
        f"{where}: changed after it was applied (checksum {recorded[:12]} recorded, "
        f"{current[:12]} now). Applied migrations must not change: restore the file and "
        "write a new migration for the change"
    )


def checksum_error(statuses: Sequence[MigrationStatus]) -> ChecksumMismatchError | None:
    """One error naming every applied file whose checksum changed, or None."""
    changed = [s for s in statuses if s.checksum_changed]
    if not changed:
        return None
    return ChecksumMismatchError(
        "; ".join(_checksum_message(s) for s in changed), migration=changed[0].label
    )


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True, slots=True)
class Selected:
    """A migration chosen to run, and where to resume it."""

    migration: MigrationFile
    direction: Direction
    resume_from: int = 0  # steps already committed by an earlier attempt
    inflight_step: int | None = None  # the step running when that attempt died
    previous: HistoryRow | None = None
    notes: tuple[str, ...] = ()


def _resume_point(
    s: MigrationStatus, direction: Direction
) -> tuple[int, int | None, tuple[str, ...]]:
    last = s.last
    assert s.file is not None  # noqa: S101 - callers select statuses with files
    if (
        last is None
        or last.direction is not direction
        or last.outcome
        not in (
            Outcome.FAILED,
            Outcome.INTERRUPTED,
            Outcome.RUNNING,
        )
    ):
        return 0, None, ()
    if last.steps_done == 0:
        return 0, None, ()
    if last.checksum != s.file.checksum:
        return (
            0,
            None,
            (
                f"{s.label}: the file changed since the attempt that committed "
                f"{last.steps_done} step(s); running every step again from the start "
                "(statements outside transactions should use IF [NOT] EXISTS)",
            ),
        )
    inflight = last.current_step if last.outcome is not Outcome.FAILED else None
    if inflight is not None and inflight <= last.steps_done:
        inflight = None
    note = f"{s.label}: resuming at step {last.steps_done + 1} ({describe_progress(last)})"
    return last.steps_done, inflight, (note,)


def select_up(
    statuses: Sequence[MigrationStatus],
    *,
    to: int | None = None,
    phases: Collection[Phase] | None = None,
    allow_out_of_order: bool = False,
) -> list[Selected]:
    """The migrations ``up`` runs, in order; raises if running them would be unsafe."""
    error = checksum_error(statuses)
    if error is not None:
        raise error
    running = [s for s in statuses if s.state is MigrationState.RUNNING]
    if running:
        s = running[0]
        assert s.last is not None  # noqa: S101 - RUNNING comes from a history row
        raise MigrationError(
            f"{s.label} is being run by {s.last.run_by} (server pid {s.last.backend_pid}); "
            "wait for it to finish",
            migration=s.label,
        )
    wanted = {Phase(p) for p in phases} if phases is not None else None
    runnable = [s for s in statuses if s.state in RUNNABLE_STATES and s.file is not None]
    chosen = [
        s
        for s in runnable
        if (to is None or s.version <= to) and (wanted is None or Phase(s.phase) in wanted)
    ]
    if not allow_out_of_order:
        reasons = [
            f"{s.label} ({s.phase}) is older than applied migrations of the same or a later phase"
            for s in chosen
            if s.out_of_order
        ]
        chosen_versions = {s.version for s in chosen}
        for s in chosen:
            for skipped in runnable:
                if (
                    skipped.version not in chosen_versions
                    and skipped.version < s.version
                    and _phase_rank(skipped.phase) <= _phase_rank(s.phase)
                ):
                    reasons.append(
                        f"applying {s.label} ({s.phase}) would leave {skipped.label} "
                        f"({skipped.phase}) behind it; apply {skipped.label} first"
                    )
        if reasons:
            raise MigrationOrderError(
                "refusing to run migrations out of order: "
                + "; ".join(dict.fromkeys(reasons))
                + ". Pass --out-of-order (allow_out_of_order=True) if that is intended.",
                migration=chosen[0].label,
            )
    selected = []
    for s in chosen:
        assert s.file is not None  # noqa: S101 - filtered above
        resume, inflight, notes = _resume_point(s, Direction.UP)
        selected.append(Selected(s.file, Direction.UP, resume, inflight, s.last, notes))
    return selected


def select_down(statuses: Sequence[MigrationStatus], *, to: int | None = None) -> list[Selected]:
    """The migrations ``down`` undoes, newest first: all above ``to``, or the newest one.

    Raises before anything runs if one of them is irreversible, changed or missing.
    """
    applied = [s for s in statuses if s.state in APPLIED_STATES]
    if to is None:
        targets = sorted(applied, key=lambda s: s.version)[-1:]
    else:
        targets = [s for s in applied if s.version > to]
    targets.sort(key=lambda s: s.version, reverse=True)
    for s in targets:
        if s.file is None:
            raise MigrationError(
                f"cannot roll back {s.label}: it is applied but its file is gone; restore "
                "the file. Nothing was rolled back.",
                migration=s.label,
            )
        if not s.file.reversible:
            reason = s.file.irreversible_reason or "it has no down section"
            raise MigrationError(
                f"cannot roll back {s.label}: it is irreversible ({reason}). Nothing was "
                "rolled back. Write a new forward migration instead, or roll back only the "
                f"migrations above it with 'down --to {s.version}'",
                migration=s.label,
            )
    error = checksum_error(targets)
    if error is not None:
        raise error
    selected = []
    for s in targets:
        assert s.file is not None  # noqa: S101 - checked above
        resume, inflight, notes = _resume_point(s, Direction.DOWN)
        selected.append(Selected(s.file, Direction.DOWN, resume, inflight, s.last, notes))
    return selected


# --------------------------------------------------------------------------- timeouts


class TimeoutSettings(Protocol):
    """The runner's timeouts, in seconds (0 = no limit); ``RunOptions`` is one."""

    @property
    def lock_timeout(self) -> float: ...
    @property
    def statement_timeout(self) -> float: ...
    @property
    def standalone_statement_timeout(self) -> float: ...
    @property
    def nonblocking_lock_timeout(self) -> float: ...


def _longer(a: float, b: float) -> float:
    """The longer of two timeouts where 0 means no limit."""
    return 0.0 if a == 0 or b == 0 else max(a, b)


def step_timeouts(
    migration: MigrationFile, step: Step, settings: TimeoutSettings
) -> tuple[float, float]:
    """``(lock_timeout, statement_timeout)`` for one step.

    The file's ``-- bluegreen:lock-timeout`` / ``statement-timeout`` win.
    Otherwise statements in transactions get ``lock_timeout`` and
    ``statement_timeout``; statements outside transactions get
    ``standalone_statement_timeout``, and the longer
    ``nonblocking_lock_timeout`` when waiting for their lock stalls nobody.
    """
    lock = migration.lock_timeout_seconds
    if lock is None:
        lock = settings.lock_timeout
        if step.nonblocking:
            lock = _longer(lock, settings.nonblocking_lock_timeout)
    statement = migration.statement_timeout_seconds
    if statement is None:
        statement = (
            settings.standalone_statement_timeout
            if step.kind is StepKind.STANDALONE
            else settings.statement_timeout
        )
    return lock, statement


# --------------------------------------------------------------------------- retries


def backoff_delay(attempt: int, *, base: float, cap: float, rand: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    Exponential (``base * 2**(attempt-1)``, at most ``cap``) with "equal
    jitter": half fixed, half ``rand`` (0 <= rand < 1), so two runners that
    collided do not retry in lockstep, yet the wait never collapses to zero.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    delay: float = min(cap, base * (2 ** (attempt - 1)))
    return delay / 2 + rand * delay / 2


# --------------------------------------------------------------------------- plan data


@dataclass(frozen=True, slots=True)
class TableEstimate:
    """A table a statement touches and the planner's row estimate for it."""

    name: str
    exists: bool
    estimated_rows: int | None  # None: unknown (or a new table)
    size_bytes: int | None = None
    # "reltuples" (planner statistics) or "n_live_tup" (never analyzed: live-row counter)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "exists": self.exists,
            "estimated_rows": self.estimated_rows,
            "size_bytes": self.size_bytes,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class LockSummary:
    """The lock a statement takes (from the linter's lock table)."""

    mode: str
    blocks_reads: bool
    blocks_writes: bool
    rewrites: bool
    scans: bool = False  # reads the whole table while holding the lock
    note: str = ""

    @property
    def blocks(self) -> str:
        """What the lock blocks, in words."""
        if self.blocks_reads:
            return "reads and writes"
        if self.blocks_writes:
            return "writes"
        return "neither reads nor writes"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "mode": self.mode,
            "blocks_reads": self.blocks_reads,
            "blocks_writes": self.blocks_writes,
            "rewrites": self.rewrites,
            "scans": self.scans,
            "blocks": self.blocks,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class PlannedStatement:
    """One statement of a plan with its lock and the tables it touches."""

    line: int
    sql: str
    lock: LockSummary | None
    tables: tuple[TableEstimate, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "line": self.line,
            "sql": self.sql,
            "lock": self.lock.to_dict() if self.lock else None,
            "tables": [t.to_dict() for t in self.tables],
        }


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """A step of a plan."""

    number: int
    kind: StepKind
    reason: str | None
    statements: tuple[PlannedStatement, ...]
    skipped: bool = False  # committed by an earlier attempt; a resume starts after it
    lock_timeout_seconds: float = 0.0
    statement_timeout_seconds: float = 0.0
    nonblocking: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "number": self.number,
            "kind": self.kind.value,
            "reason": self.reason,
            "skipped": self.skipped,
            "lock_timeout_seconds": self.lock_timeout_seconds,
            "statement_timeout_seconds": self.statement_timeout_seconds,
            "nonblocking": self.nonblocking,
            "statements": [s.to_dict() for s in self.statements],
        }


@dataclass(frozen=True, slots=True)
class PlannedMigration:
    """A migration a run would execute, step by step."""

    version: int
    label: str
    phase: str
    direction: Direction
    path: str
    reversible: bool
    steps: tuple[PlannedStep, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "version": self.version,
            "label": self.label,
            "phase": self.phase,
            "direction": self.direction.value,
            "path": self.path,
            "reversible": self.reversible,
            "notes": list(self.notes),
            "steps": [s.to_dict() for s in self.steps],
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``up`` or ``down`` would do now."""

    direction: Direction
    migrations: tuple[PlannedMigration, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "direction": self.direction.value,
            "migrations": [m.to_dict() for m in self.migrations],
        }


def plan_migration(
    selected: Selected,
    steps: Sequence[Step],
    *,
    lock_of: Callable[[Statement], tuple[LockSummary | None, tuple[str, ...]]],
    estimates: Callable[[str], TableEstimate],
    timeouts: TimeoutSettings,
) -> PlannedMigration:
    """Describe one selected migration: steps, locks and the tables each statement touches."""
    planned_steps = []
    for step in steps:
        statements = []
        for statement in step.statements:
            lock, tables = lock_of(statement)
            statements.append(
                PlannedStatement(
                    statement.line,
                    statement.text,
                    lock,
                    tuple(estimates(t) for t in dict.fromkeys(tables)),
                )
            )
        lock_timeout, statement_timeout = step_timeouts(selected.migration, step, timeouts)
        planned_steps.append(
            PlannedStep(
                step.number,
                step.kind,
                step.reason,
                tuple(statements),
                skipped=step.number <= selected.resume_from,
                lock_timeout_seconds=lock_timeout,
                statement_timeout_seconds=statement_timeout,
                nonblocking=step.nonblocking,
            )
        )
    m = selected.migration
    notes = selected.notes
    section = m.section(selected.direction.value)
    if not steps and section is not None:
        notes = (*notes, nothing_to_run(m, selected.direction))
    return PlannedMigration(
        m.version,
        m.label,
        m.phase.value,
        selected.direction,
        str(m.path),
        m.reversible,
        tuple(planned_steps),
        notes,
    )


def nothing_to_run(migration: MigrationFile, direction: Direction) -> str:
    """What a section without statements means, with the reason its comment gives."""
    section = migration.section(direction.value)
    why = section.note if section is not None else ""
    return f"the {direction.value} section has only comments: nothing to run" + (
        f" ({why})" if why else ""
    )
