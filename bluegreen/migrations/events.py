"""What the migration runner reports while it works, as values.

The runner hands each event to an ``on_event`` callback: the CLI prints
``describe()`` as a progress line, the rollout controller records them. Every
event's wording lives here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bluegreen.migrations.locking import Blocker, LockHolder, human_seconds
from bluegreen.migrations.plan import (
    Direction,
    HistoryRow,
    Outcome,
    Step,
    describe_progress,
    summarize_sql,
)
from bluegreen.migrations.sql import Statement


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every runner event."""

    @property
    def name(self) -> str:
        """snake_case event name for logs (``migration_applied``...)."""
        return "migration_event"

    def describe(self) -> str:
        """One human line."""
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        """Key/values for a structured log line."""
        return {}


@dataclass(frozen=True, slots=True)
class RunnerLockWaiting(Event):
    """Another runner holds the lock; this one waits for it."""

    holders: tuple[LockHolder, ...]
    wait: float

    @property
    def name(self) -> str:
        return "runner_lock_waiting"

    def describe(self) -> str:
        who = "; ".join(h.describe() for h in self.holders) or "another session"
        return f"waiting up to {human_seconds(self.wait)} for the runner lock held by {who}"

    def fields(self) -> dict[str, Any]:
        return {"holders": [h.pid for h in self.holders], "wait_seconds": self.wait}


@dataclass(frozen=True, slots=True)
class StaleRunRecovered(Event):
    """A ``running`` row of a runner that died was marked ``interrupted``."""

    row: HistoryRow

    @property
    def name(self) -> str:
        return "migration_interrupted_found"

    def describe(self) -> str:
        verb = "applying" if self.row.direction is Direction.UP else "rolling back"
        return (
            f"! {self.row.label}: a runner ({self.row.run_by}, pid {self.row.runner_pid}) "
            f"stopped while {verb} it, started {self.row.started_at:%Y-%m-%d %H:%M:%S %Z}; "
            f"marked interrupted: {describe_progress(self.row)}"
        )

    def fields(self) -> dict[str, Any]:
        return {"migration": self.row.label, "row": self.row.id, "steps_done": self.row.steps_done}


@dataclass(frozen=True, slots=True)
class Note(Event):
    """Something worth saying that is not a failure."""

    message: str
    migration: str | None = None

    @property
    def name(self) -> str:
        return "migration_note"

    def describe(self) -> str:
        return f"  note: {self.message}"

    def fields(self) -> dict[str, Any]:
        return {"migration": self.migration, "message": self.message}


@dataclass(frozen=True, slots=True)
class MigrationStarted(Event):
    """A migration begins (or resumes)."""

    label: str
    phase: str
    direction: Direction
    steps_total: int
    resume_from: int = 0

    @property
    def name(self) -> str:
        return "migration_started"

    def describe(self) -> str:
        verb = "applying" if self.direction is Direction.UP else "rolling back"
        resume = f", resuming after step {self.resume_from}" if self.resume_from else ""
        steps = "1 step" if self.steps_total == 1 else f"{self.steps_total} steps"
        if not self.steps_total:
            steps = "no statements"
        return f"{verb} {self.label} ({self.phase}, {steps}{resume})"

    def fields(self) -> dict[str, Any]:
        return {
            "migration": self.label,
            "phase": self.phase,
            "direction": self.direction.value,
            "steps_total": self.steps_total,
            "resume_from": self.resume_from,
        }


@dataclass(frozen=True, slots=True)
class StepStarted(Event):
    """A step begins."""

    label: str
    step: Step
    steps_total: int

    @property
    def name(self) -> str:
        return "migration_step_started"

    def describe(self) -> str:
        where = {
            "transaction": "in a transaction",
            "standalone": "outside a transaction",
            "backfill": "batched backfill",
        }[self.step.kind.value]
        return (
            f"  [{self.step.number}/{self.steps_total}] line {self.step.line}, {where}: "
            f"{self.step.summary}"
        )

    def fields(self) -> dict[str, Any]:
        return {
            "migration": self.label,
            "step": self.step.number,
            "kind": self.step.kind.value,
            "line": self.step.line,
        }


@dataclass(frozen=True, slots=True)
class StatementStarted(Event):
    """A statement of a multi-statement transaction step begins."""

    label: str
    step: Step
    statement: Statement

    @property
    def name(self) -> str:
        return "migration_statement_started"

    def describe(self) -> str:
        return f"      line {self.statement.line}: {summarize_sql(self.statement.text)}"

    def fields(self) -> dict[str, Any]:
        return {"migration": self.label, "step": self.step.number, "line": self.statement.line}


@dataclass(frozen=True, slots=True)
class StepSkipped(Event):
    """A step is not run again (an earlier attempt committed it)."""

    label: str
    step: Step
    reason: str

    @property
    def name(self) -> str:
        return "migration_step_skipped"

    def describe(self) -> str:
        return f"  [{self.step.number}] skipped: {self.reason}"

    def fields(self) -> dict[str, Any]:
        return {"migration": self.label, "step": self.step.number, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class StepFinished(Event):
    """A step committed."""

    label: str
    step: Step
    seconds: float
    attempts: int = 1

    @property
    def name(self) -> str:
        return "migration_step_done"

    def describe(self) -> str:
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"  [{self.step.number}] done in {human_seconds(self.seconds)}{tries}"

    def fields(self) -> dict[str, Any]:
        return {
            "migration": self.label,
            "step": self.step.number,
            "seconds": round(self.seconds, 3),
            "attempts": self.attempts,
        }


@dataclass(frozen=True, slots=True)
class LockRetry(Event):
    """A step hit lock_timeout (or a deadlock) and will be retried after a pause."""

    label: str
    step: Step
    attempt: int
    max_attempts: int
    delay: float
    lock_timeout: float
    sqlstate: str
    blockers: tuple[Blocker, ...] = field(default=())

    @property
    def name(self) -> str:
        return "migration_lock_retry"

    def describe(self) -> str:
        why = (
            f"could not get its lock within {human_seconds(self.lock_timeout)}"
            if self.sqlstate == "55P03"
            else "was chosen as a deadlock victim"
        )
        lines = [
            f"  [{self.step.number}] attempt {self.attempt}/{self.max_attempts} {why}; "
            f"application queries were released; retrying in {human_seconds(self.delay)}"
        ]
        lines += [f"      blocked by {b.describe()}" for b in self.blockers]
        return "\n".join(lines)

    def fields(self) -> dict[str, Any]:
        return {
            "migration": self.label,
            "step": self.step.number,
            "attempt": self.attempt,
            "delay_seconds": round(self.delay, 3),
            "sqlstate": self.sqlstate,
            "blockers": [b.pid for b in self.blockers],
        }


@dataclass(frozen=True, slots=True)
class InvalidIndexDropped(Event):
    """An INVALID index left by a failed concurrent build was dropped."""

    label: str
    index: str
    when: str  # "before running" / "after the failure"

    @property
    def name(self) -> str:
        return "migration_invalid_index_dropped"

    def describe(self) -> str:
        return (
            f"  dropped INVALID index {self.index} {self.when} (a failed CREATE INDEX "
            "CONCURRENTLY leaves one behind) with DROP INDEX CONCURRENTLY"
        )

    def fields(self) -> dict[str, Any]:
        return {"migration": self.label, "index": self.index, "when": self.when}


@dataclass(frozen=True, slots=True)
class InvalidIndexKept(Event):
    """An INVALID index could not be dropped; the next run tries again."""

    label: str
    index: str
    error: str

    @property
    def name(self) -> str:
        return "migration_invalid_index_kept"

    def describe(self) -> str:
        return (
            f"  ! INVALID index {self.index} could not be dropped ({self.error}); the next run "
            f"drops it first, or run: DROP INDEX CONCURRENTLY {self.index};"
        )

    def fields(self) -> dict[str, Any]:
        return {"migration": self.label, "index": self.index, "error": self.error}


@dataclass(frozen=True, slots=True)
class ServerNotice(Event):
    """A NOTICE/WARNING the server sent while a migration ran."""

    label: str | None
    severity: str
    message: str

    @property
    def name(self) -> str:
        return "migration_server_notice"

    def describe(self) -> str:
        return f"  {self.severity}: {self.message}"

    def fields(self) -> dict[str, Any]:
        return {"migration": self.label, "severity": self.severity, "message": self.message}


@dataclass(frozen=True, slots=True)
class BackfillProgressed(Event):
    """A batch of a backfill step finished (``progress`` is a BackfillProgress)."""

    label: str
    step: int
    progress: Any

    @property
    def name(self) -> str:
        return "backfill_progress"

    def describe(self) -> str:
        p = self.progress
        rows = getattr(p, "rows_done", None)
        rate = getattr(p, "rows_per_second", None)
        if rows is None:
            return f"  [{self.step}] backfill: {p}"
        return f"  [{self.step}] backfill: {rows:,} rows, {rate or 0:,.0f} rows/s"

    def fields(self) -> dict[str, Any]:
        return {"migration": self.label, "step": self.step}


@dataclass(frozen=True, slots=True)
class MigrationFinished(Event):
    """A migration ended: applied, rolled back, or failed."""

    label: str
    direction: Direction
    outcome: Outcome
    seconds: float
    error: str | None = None

    @property
    def name(self) -> str:
        return {
            Outcome.APPLIED: "migration_applied",
            Outcome.ROLLED_BACK: "migration_rolled_back",
        }.get(self.outcome, "migration_failed")

    def describe(self) -> str:
        if self.outcome in (Outcome.APPLIED, Outcome.ROLLED_BACK):
            verb = "applied" if self.outcome is Outcome.APPLIED else "rolled back"
            return f"{verb} {self.label} in {human_seconds(self.seconds)}"
        word = "INTERRUPTED" if self.outcome is Outcome.INTERRUPTED else "FAILED"
        return f"{word} {self.label} after {human_seconds(self.seconds)}: {self.error}"

    def fields(self) -> dict[str, Any]:
        return {
            "migration": self.label,
            "direction": self.direction.value,
            "outcome": self.outcome.value,
            "seconds": round(self.seconds, 3),
        }
