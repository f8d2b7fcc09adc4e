"""The runner's pure decisions: steps, states, selection, order, resume, backoff."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bluegreen.errors import (
    ChecksumMismatchError,
    MigrationError,
    MigrationFileError,
    MigrationOrderError,
)
from bluegreen.migrations.files import MigrationFile, Phase, parse_migration
from bluegreen.migrations.plan import (
    Direction,
    HistoryRow,
    LockSummary,
    MigrationState,
    MigrationStatus,
    Outcome,
    Selected,
    Step,
    StepKind,
    TableEstimate,
    analyse,
    backfill_key,
    backoff_delay,
    build_steps,
    describe_progress,
    migration_steps,
    plan_migration,
    problems,
    select_down,
    select_up,
    split_backfill_key,
    step_timeouts,
    summarize_sql,
    tables_of,
    transaction_restriction,
    waits_without_blocking,
)
from bluegreen.migrations.sql import parse_statements

PG15 = 150000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Timeouts:
    lock_timeout: float = 2.0
    statement_timeout: float = 60.0
    standalone_statement_timeout: float = 0.0
    nonblocking_lock_timeout: float = 300.0


TIMEOUTS = Timeouts()


def node(sql: str) -> Any:
    return parse_statements(sql)[0].node


def steps_of(sql: str, version: int = PG15) -> tuple[Step, ...]:
    return build_steps(parse_statements(sql), server_version_num=version, source="m.sql")


# --------------------------------------------------------------------------- steps


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a)", "CREATE INDEX CONCURRENTLY"),
        ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)", "CREATE INDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", "DROP INDEX CONCURRENTLY"),
        ("REINDEX INDEX CONCURRENTLY i", "REINDEX CONCURRENTLY"),
        ("REINDEX (CONCURRENTLY) TABLE t", "REINDEX CONCURRENTLY"),
        ("REINDEX SCHEMA public", "REINDEX SCHEMA/SYSTEM/DATABASE"),
        ("REINDEX DATABASE app", "REINDEX SCHEMA/SYSTEM/DATABASE"),
        ("VACUUM t", "VACUUM"),
        ("VACUUM (ANALYZE) t", "VACUUM"),
        ("VACUUM FULL t", "VACUUM"),
        ("CLUSTER", "CLUSTER without a table"),
        ("CREATE DATABASE other", "CREATE/DROP DATABASE"),
        ("DROP DATABASE other", "CREATE/DROP DATABASE"),
        ("ALTER DATABASE app SET TABLESPACE fast", "SET TABLESPACE"),
        ("CREATE TABLESPACE fast LOCATION '/ssd'", "TABLESPACE"),
        ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM"),
        ("DISCARD ALL", "DISCARD"),
        ("CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p", "subscription"),
        ("ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY", "DETACH PARTITION CONCURRENTLY"),
    ],
)
def test_statements_that_refuse_a_transaction(sql: str, reason: str) -> None:
    found = transaction_restriction(node(sql), PG15)
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX i ON t (a)",
        "DROP INDEX i",
        "REINDEX INDEX i",
        "REINDEX (CONCURRENTLY false) TABLE t",
        "ANALYZE t",
        "CLUSTER t USING i",
        "ALTER DATABASE app SET work_mem = '1MB'",
        "ALTER TABLE p DETACH PARTITION p1",
        "ALTER TYPE mood ADD VALUE 'meh'",
        "ALTER TYPE mood RENAME VALUE 'a' TO 'b'",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY mv",
        "UPDATE t SET a = 1",
    ],
)
def test_statements_that_run_in_a_transaction(sql: str) -> None:
    assert transaction_restriction(node(sql), PG15) is None


def test_enum_add_value_before_pg12_runs_alone() -> None:
    reason = transaction_restriction(node("ALTER TYPE mood ADD VALUE 'meh'"), 110000)
    assert reason is not None
    assert "before PostgreSQL 12" in reason


def test_groups_consecutive_transactional_statements() -> None:
    steps = steps_of(
        "ALTER TABLE t ADD COLUMN a int;\n"
        "COMMENT ON COLUMN t.a IS 'x';\n"
        "CREATE INDEX CONCURRENTLY t_a ON t (a);\n"
        "VACUUM t;\n"
        "ALTER TABLE t ADD COLUMN b int;\n"
    )
    assert [(s.number, s.kind, len(s.statements)) for s in steps] == [
        (1, StepKind.TRANSACTION, 2),
        (2, StepKind.STANDALONE, 1),
        (3, StepKind.STANDALONE, 1),
        (4, StepKind.TRANSACTION, 1),
    ]
    assert steps[0].line == 1
    assert steps[1].line == 3
    assert steps[1].reason is not None
    assert steps[0].summary == "ALTER TABLE t ADD COLUMN a int (+1 more)"


def test_backfill_directive_makes_its_own_step() -> None:
    steps = steps_of(
        "ALTER TABLE t ADD COLUMN a int;\n"
        "-- bluegreen:backfill batch-size=100\n"
        "UPDATE t SET a = b WHERE a IS NULL;\n"
        "SELECT 1;\n"
    )
    assert [s.kind for s in steps] == [
        StepKind.TRANSACTION,
        StepKind.BACKFILL,
        StepKind.TRANSACTION,
    ]
    assert steps[1].line == 3


def test_enum_value_used_later_in_the_same_transaction_splits() -> None:
    steps = steps_of("ALTER TYPE mood ADD VALUE 'meh';\nINSERT INTO feelings (m) VALUES ('meh');\n")
    assert [s.kind for s in steps] == [StepKind.STANDALONE, StepKind.TRANSACTION]
    assert steps[0].reason is not None
    assert "'meh' is used later" in steps[0].reason


def test_enum_value_used_in_a_function_body_splits() -> None:
    steps = steps_of(
        "ALTER TYPE mood ADD VALUE 'meh';\n"
        "DO $$ BEGIN UPDATE feelings SET m = 'meh' WHERE m IS NULL; END $$;\n"
    )
    assert steps[0].kind is StepKind.STANDALONE


def test_enum_value_not_used_stays_in_the_transaction() -> None:
    steps = steps_of("ALTER TYPE mood ADD VALUE 'meh';\nALTER TABLE t ADD COLUMN a int;\n")
    assert [s.kind for s in steps] == [StepKind.TRANSACTION]


def test_enum_value_of_a_type_created_in_the_same_transaction_stays() -> None:
    steps = steps_of(
        "CREATE TYPE mood AS ENUM ('ok');\n"
        "ALTER TYPE mood ADD VALUE 'meh';\n"
        "CREATE TABLE feelings (m mood DEFAULT 'meh');\n"
    )
    assert [s.kind for s in steps] == [StepKind.TRANSACTION]


def test_transaction_control_is_rejected_with_its_line() -> None:
    with pytest.raises(MigrationFileError, match=r"^m\.sql:2: transaction control \(BEGIN\)"):
        steps_of("SELECT 1;\nBEGIN;\nSELECT 2;\nCOMMIT;\n")


def migration(
    version: int = 1,
    phase: str = "expand",
    *,
    up: str = "ALTER TABLE t ADD COLUMN a int;",
    down: str | None = "ALTER TABLE t DROP COLUMN a;",
    name: str | None = None,
    extra_header: str = "",
) -> MigrationFile:
    text = f"-- bluegreen:phase {phase}\n{extra_header}-- bluegreen:up\n{up}\n"
    if down is not None:
        text += f"-- bluegreen:down\n{down}\n"
    elif not extra_header:
        text = text.replace(
            "-- bluegreen:up", "-- bluegreen:irreversible drops data\n-- bluegreen:up"
        )
    return parse_migration(Path(f"migrations/{version:04d}_{name or f'm{version}'}.sql"), text)


def test_migration_steps_use_file_lines() -> None:
    m = migration(up="SELECT 1;\nCREATE INDEX CONCURRENTLY i ON t (a);")
    steps = migration_steps(m, Direction.UP, server_version_num=PG15)
    assert [s.line for s in steps] == [3, 4]
    down = migration_steps(m, Direction.DOWN, server_version_num=PG15)
    assert down[0].line == 6


def test_migration_steps_of_a_missing_down() -> None:
    m = migration(down=None)
    with pytest.raises(MigrationError, match="has no down section: drops data"):
        migration_steps(m, Direction.DOWN, server_version_num=PG15)


def test_migration_steps_of_a_section_with_only_semicolons() -> None:
    m = migration(up=";")
    with pytest.raises(MigrationFileError, match=r"0001_m1\.sql:3: the up section has no SQL"):
        migration_steps(m, Direction.UP, server_version_num=PG15)


def test_down_with_only_comments_has_no_steps_and_the_plan_says_why() -> None:
    m = migration(2, "migrate", up="UPDATE t SET a = b;", down="-- nothing to undo: see 0001")
    assert m.reversible
    assert migration_steps(m, Direction.DOWN, server_version_num=PG15) == ()
    planned = plan_migration(
        Selected(m, Direction.DOWN),
        (),
        lock_of=lambda s: (None, ()),
        estimates=lambda name: TableEstimate(name, True, 0),
        timeouts=TIMEOUTS,
    )
    assert planned.reversible
    assert planned.steps == ()
    assert planned.notes == (
        "the down section has only comments: nothing to run (nothing to undo: see 0001)",
    )


def test_select_down_takes_a_migration_whose_down_has_only_comments() -> None:
    m = migration(1, down="-- nothing to undo: the values stay valid")
    statuses = analyse([m], [row(1, Outcome.APPLIED, checksum=m.checksum)])
    (selected,) = select_down(statuses)
    assert selected.migration is m
    assert statuses[0].to_dict()["reversible"] is True


def test_up_with_only_comments_stays_an_error() -> None:
    m = migration(up="/* nothing */ ;")
    with pytest.raises(MigrationFileError, match="the up section has no SQL statement"):
        migration_steps(m, Direction.UP, server_version_num=PG15)


def test_backfill_keys_of_up_and_down_differ_and_split_back() -> None:
    assert backfill_key("0002_copy", Direction.UP) == "0002_copy"
    assert backfill_key("0002_copy", Direction.DOWN) == "0002_copy:down"
    for direction in Direction:
        assert split_backfill_key(backfill_key("0002_copy", direction)) == ("0002_copy", direction)


def test_summarize_sql() -> None:
    assert summarize_sql("SELECT\n   1,\n  2") == "SELECT 1, 2"
    assert summarize_sql("x" * 100, 10) == "x" * 9 + "…"


def test_tables_of_names_every_relation_once() -> None:
    (statement,) = parse_statements(
        "UPDATE app.orders o SET s = x.s FROM statuses x WHERE x.id = o.sid AND o.id IN "
        "(SELECT id FROM app.orders)"
    )
    assert set(tables_of(statement)) == {"app.orders", "statuses"}
    assert len(tables_of(statement)) == 2


@pytest.mark.parametrize(
    ("sql", "nonblocking"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a)", True),
        ("DROP INDEX CONCURRENTLY i", True),
        ("REINDEX INDEX CONCURRENTLY i", True),
        ("VACUUM (ANALYZE) t", True),
        ("VACUUM FULL t", False),
        ("ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY", True),
        ("ALTER TYPE mood ADD VALUE 'meh'", True),
        ("REINDEX DATABASE app", False),
        ("CLUSTER", False),
        ("ALTER SYSTEM SET work_mem = '1MB'", False),
    ],
)
def test_waits_without_blocking(sql: str, nonblocking: bool) -> None:
    assert waits_without_blocking(node(sql)) is nonblocking


def test_step_timeouts() -> None:
    m = migration(
        up="ALTER TABLE t ADD COLUMN a int;\nCREATE INDEX CONCURRENTLY i ON t (a);\nVACUUM FULL t;"
    )
    tx, concurrent, full = migration_steps(m, Direction.UP, server_version_num=PG15)
    assert step_timeouts(m, tx, TIMEOUTS) == (2.0, 60.0)
    assert step_timeouts(m, concurrent, TIMEOUTS) == (300.0, 0.0)
    assert step_timeouts(m, full, TIMEOUTS) == (2.0, 0.0)
    unlimited = Timeouts(lock_timeout=0.0)
    assert step_timeouts(m, concurrent, unlimited) == (0.0, 0.0)
    assert step_timeouts(m, concurrent, Timeouts(lock_timeout=900.0))[0] == 900.0


def test_file_timeouts_win() -> None:
    m = migration(
        up="CREATE INDEX CONCURRENTLY i ON t (a);",
        extra_header="-- bluegreen:lock-timeout 10s\n-- bluegreen:statement-timeout 1h\n",
        down="DROP INDEX CONCURRENTLY i;",
    )
    (step,) = migration_steps(m, Direction.UP, server_version_num=PG15)
    assert step_timeouts(m, step, TIMEOUTS) == (10.0, 3600.0)


# --------------------------------------------------------------------------- history


def row(
    version: int,
    outcome: Outcome = Outcome.APPLIED,
    *,
    direction: Direction = Direction.UP,
    id: int | None = None,
    checksum: str | None = None,
    m: MigrationFile | None = None,
    phase: str = "expand",
    steps_total: int = 1,
    steps_done: int | None = None,
    current_step: int | None = None,
    backend_pid: int | None = 4242,
) -> HistoryRow:
    if checksum is None:
        checksum = m.checksum if m is not None else "c" * 64
    done = (
        steps_done
        if steps_done is not None
        else (steps_total if outcome.value in ("applied", "rolled_back") else 0)
    )
    return HistoryRow(
        id=id if id is not None else version,
        version=version,
        name=f"m{version}",
        phase=m.phase.value if m is not None else phase,
        direction=direction,
        checksum=checksum,
        outcome=outcome,
        started_at=T0,
        finished_at=None if outcome is Outcome.RUNNING else T0,
        steps_total=steps_total,
        steps_done=done,
        current_step=current_step,
        run_by="ana@build-1",
        runner_pid=99,
        backend_pid=backend_pid,
        tool_version="0.1.0",
    )


def state_of(statuses: Sequence[MigrationStatus], version: int) -> MigrationStatus:
    return next(s for s in statuses if s.version == version)


def test_pending_without_history() -> None:
    (s,) = analyse([migration(1)], [])
    assert s.state is MigrationState.PENDING
    assert s.last is None
    assert s.label == "0001_m1"
    assert s.reversible is True


def test_applied_then_rolled_back_then_applied() -> None:
    m = migration(1)
    rows = [row(1, m=m, id=1)]
    assert analyse([m], rows)[0].state is MigrationState.APPLIED
    rows.append(row(1, Outcome.ROLLED_BACK, direction=Direction.DOWN, m=m, id=2))
    assert analyse([m], rows)[0].state is MigrationState.PENDING
    rows.append(row(1, m=m, id=3))
    (s,) = analyse([m], rows)
    assert s.state is MigrationState.APPLIED
    assert s.applied is not None
    assert s.applied.id == 3


@pytest.mark.parametrize(
    ("outcome", "direction", "alive", "state", "stale"),
    [
        (Outcome.FAILED, Direction.UP, False, MigrationState.FAILED, False),
        (Outcome.INTERRUPTED, Direction.UP, False, MigrationState.INTERRUPTED, False),
        (Outcome.RUNNING, Direction.UP, True, MigrationState.RUNNING, False),
        (Outcome.RUNNING, Direction.UP, False, MigrationState.INTERRUPTED, True),
        (Outcome.FAILED, Direction.DOWN, False, MigrationState.ROLLBACK_FAILED, False),
        (Outcome.INTERRUPTED, Direction.DOWN, False, MigrationState.ROLLBACK_FAILED, False),
        (Outcome.RUNNING, Direction.DOWN, False, MigrationState.ROLLBACK_FAILED, True),
        (Outcome.RUNNING, Direction.DOWN, True, MigrationState.RUNNING, False),
    ],
    ids=[
        "up-failed",
        "up-interrupted",
        "up-running-live",
        "up-running-dead",
        "down-failed",
        "down-interrupted",
        "down-running-dead",
        "down-running-live",
    ],
)
def test_state_of_the_latest_attempt(
    outcome: Outcome, direction: Direction, alive: bool, state: MigrationState, stale: bool
) -> None:
    m = migration(1)
    rows = [row(1, m=m, id=1)] if direction is Direction.DOWN else []
    rows.append(row(1, outcome, direction=direction, m=m, id=2))
    (s,) = analyse([m], rows, live_backends={4242} if alive else set())
    assert (s.state, s.stale) == (state, stale)


def test_applied_but_file_gone_is_missing() -> None:
    (s,) = analyse([], [row(7)])
    assert s.state is MigrationState.MISSING
    assert s.file is None
    assert s.label == "7_m7"
    assert s.reversible is None
    assert [p.kind for p in problems([s])] == ["missing_file"]


def test_rolled_back_and_file_gone_is_forgotten() -> None:
    rows = [row(7, id=1), row(7, Outcome.ROLLED_BACK, direction=Direction.DOWN, id=2)]
    assert analyse([], rows) == []


def test_changed_checksum_is_reported_and_refused() -> None:
    m = migration(1)
    (s,) = analyse([m], [row(1, checksum="0" * 64)])
    assert s.checksum_changed
    (problem,) = problems([s])
    assert problem.kind == "checksum_mismatch"
    assert "0001_m1.sql: changed after it was applied" in problem.message
    with pytest.raises(ChecksumMismatchError, match="restore the file"):
        select_up([s])
    with pytest.raises(ChecksumMismatchError):
        select_down([s])


def test_changed_checksum_of_a_pending_file_is_fine() -> None:
    m = migration(1)
    rows = [row(1, Outcome.FAILED, checksum="0" * 64)]
    (s,) = analyse([m], rows)
    assert not s.checksum_changed


def test_newer_applied_same_phase_makes_older_pending_out_of_order() -> None:
    older, newer = migration(1), migration(2)
    statuses = analyse([older, newer], [row(2, m=newer)])
    s = state_of(statuses, 1)
    assert s.out_of_order
    assert not s.deferred
    assert [p.kind for p in problems(statuses)] == ["out_of_order"]
    with pytest.raises(MigrationOrderError, match="0001_m1 \\(expand\\) is older"):
        select_up(statuses)
    (chosen,) = select_up(statuses, allow_out_of_order=True)
    assert chosen.migration is older


def test_deferred_contract_behind_newer_expand_is_allowed() -> None:
    contract, expand = migration(1, "contract"), migration(2, "expand")
    statuses = analyse([contract, expand], [row(2, m=expand)])
    s = state_of(statuses, 1)
    assert s.deferred
    assert not s.out_of_order
    assert [(p.kind, p.severity.value) for p in problems(statuses)] == [("gap", "warning")]
    assert [sel.migration.version for sel in select_up(statuses)] == [1]


def test_pending_expand_behind_applied_contract_is_out_of_order() -> None:
    expand, contract = migration(1, "expand"), migration(2, "contract")
    statuses = analyse([expand, contract], [row(2, m=contract)])
    assert state_of(statuses, 1).out_of_order


# --------------------------------------------------------------------------- selection


def test_select_up_in_version_order_up_to_a_target() -> None:
    files = [migration(v) for v in (1, 2, 3, 4)]
    statuses = analyse(files, [row(1, m=files[0])])
    assert [s.migration.version for s in select_up(statuses)] == [2, 3, 4]
    assert [s.migration.version for s in select_up(statuses, to=3)] == [2, 3]
    assert select_up(statuses, to=1) == []


def test_select_up_by_phase() -> None:
    files = [migration(1, "expand"), migration(2, "migrate"), migration(3, "contract")]
    statuses = analyse(files, [])
    assert [s.migration.version for s in select_up(statuses, phases={Phase.EXPAND})] == [1]
    expanded = analyse(files, [row(1, m=files[0])])
    assert [s.migration.version for s in select_up(expanded, phases={Phase("migrate")})] == [2]


def test_select_up_refuses_to_leave_an_earlier_phase_behind() -> None:
    files = [migration(1, "expand"), migration(2, "migrate")]
    statuses = analyse(files, [])
    with pytest.raises(MigrationOrderError, match="would leave 0001_m1 \\(expand\\) behind"):
        select_up(statuses, phases={Phase.MIGRATE})
    assert len(select_up(statuses, phases={Phase.MIGRATE}, allow_out_of_order=True)) == 1


def test_select_up_may_leave_a_later_phase_behind() -> None:
    files = [migration(1, "contract"), migration(2, "expand")]
    statuses = analyse(files, [])
    assert [s.migration.version for s in select_up(statuses, phases={Phase.EXPAND})] == [2]


def test_select_up_refuses_while_another_runner_runs() -> None:
    m = migration(1)
    statuses = analyse([m], [row(1, Outcome.RUNNING, m=m)], live_backends={4242})
    with pytest.raises(MigrationError, match="is being run by ana@build-1"):
        select_up(statuses)


def test_failed_migration_resumes_after_its_committed_steps() -> None:
    m = migration(1)
    rows = [row(1, Outcome.FAILED, m=m, steps_total=3, steps_done=2, current_step=3)]
    (sel,) = select_up(analyse([m], rows))
    assert sel.resume_from == 2
    assert sel.inflight_step is None  # it failed: PostgreSQL said so
    assert sel.notes == ("0001_m1: resuming at step 3 (steps 1-2 of 3 committed; step 3 failed)",)


def test_interrupted_migration_knows_the_step_in_flight() -> None:
    m = migration(1)
    rows = [row(1, Outcome.RUNNING, m=m, steps_total=3, steps_done=1, current_step=2)]
    (sel,) = select_up(analyse([m], rows, live_backends=()))
    assert (sel.resume_from, sel.inflight_step) == (1, 2)


def test_changed_file_restarts_a_partial_migration_from_the_start() -> None:
    m = migration(1)
    rows = [row(1, Outcome.FAILED, checksum="0" * 64, steps_total=3, steps_done=2)]
    (sel,) = select_up(analyse([m], rows))
    assert sel.resume_from == 0
    assert "running every step again from the start" in sel.notes[0]


def test_select_down_takes_the_newest_applied() -> None:
    files = [migration(v) for v in (1, 2, 3)]
    statuses = analyse(files, [row(1, m=files[0]), row(2, m=files[1])])
    (sel,) = select_down(statuses)
    assert (sel.migration.version, sel.direction) == (2, Direction.DOWN)


def test_select_down_to_a_version_goes_newest_first() -> None:
    files = [migration(v) for v in (1, 2, 3)]
    statuses = analyse(files, [row(v, m=files[v - 1]) for v in (1, 2, 3)])
    assert [s.migration.version for s in select_down(statuses, to=1)] == [3, 2]
    assert [s.migration.version for s in select_down(statuses, to=0)] == [3, 2, 1]
    assert select_down(analyse(files, []), to=0) == []


def test_select_down_refuses_an_irreversible_migration_before_running_anything() -> None:
    files = [migration(1), migration(2, "contract", down=None, name="drop_old"), migration(3)]
    statuses = analyse(files, [row(v, m=files[v - 1]) for v in (1, 2, 3)])
    with pytest.raises(MigrationError) as info:
        select_down(statuses, to=0)
    message = str(info.value)
    assert "cannot roll back 0002_drop_old: it is irreversible (drops data)" in message
    assert "Nothing was rolled back" in message
    assert "down --to 2" in message
    assert info.value.migration == "0002_drop_old"


def test_select_down_refuses_a_missing_file() -> None:
    statuses = analyse([], [row(5)])
    with pytest.raises(
        MigrationError, match="cannot roll back 5_m5: it is applied but its file is gone"
    ):
        select_down(statuses)


def test_select_down_resumes_a_failed_rollback() -> None:
    m = migration(1)
    rows = [
        row(1, m=m, id=1, steps_total=2),
        row(1, Outcome.FAILED, direction=Direction.DOWN, m=m, id=2, steps_total=2, steps_done=1),
    ]
    statuses = analyse([m], rows)
    assert statuses[0].state is MigrationState.ROLLBACK_FAILED
    assert [p.kind for p in problems(statuses)] == ["rollback_failed"]
    (sel,) = select_down(statuses)
    assert sel.resume_from == 1


def test_problems_for_unfinished_runs() -> None:
    files = [migration(1), migration(2), migration(3)]
    rows = [
        row(1, Outcome.FAILED, m=files[0], steps_total=2, steps_done=1),
        row(2, Outcome.RUNNING, m=files[1], backend_pid=1),
        row(3, Outcome.RUNNING, m=files[2], backend_pid=2),
    ]
    found = problems(analyse(files, rows, live_backends={2}))
    assert [(p.kind, p.severity.value, p.version) for p in found] == [
        ("failed", "error", 1),
        ("interrupted", "error", 2),
        ("running", "warning", 3),
    ]
    assert "stopped without recording an outcome" in found[1].message
    assert found[0].to_dict()["label"] == "0001_m1"


@pytest.mark.parametrize(
    ("done", "current", "expected"),
    [
        (0, None, "no step of 3 committed"),
        (1, None, "step 1 of 3 committed"),
        (2, 3, "steps 1-2 of 3 committed; step 3 failed"),
        (1, 1, "step 1 of 3 committed"),
    ],
)
def test_describe_progress(done: int, current: int | None, expected: str) -> None:
    r = row(1, Outcome.FAILED, steps_total=3, steps_done=done, current_step=current)
    assert describe_progress(r) == expected


def test_describe_progress_warns_an_interrupted_step_may_have_finished() -> None:
    r = row(1, Outcome.INTERRUPTED, steps_total=2, steps_done=0, current_step=1)
    assert describe_progress(r).endswith("(if it was outside a transaction it may have finished)")


def test_status_and_row_serialise() -> None:
    m = migration(1)
    (s,) = analyse([m], [row(1, m=m)])
    data = s.to_dict()
    assert data["state"] == "applied"
    assert data["label"] == "0001_m1"
    assert data["last_attempt"]["outcome"] == "applied"
    assert data["applied_at"] == T0.isoformat()


# --------------------------------------------------------------------------- backoff


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (9, 10.0)]:
        low = backoff_delay(attempt, base=0.5, cap=10.0, rand=0.0)
        high = backoff_delay(attempt, base=0.5, cap=10.0, rand=0.999999)
        assert low == full / 2
        assert full / 2 < high < full


def test_backoff_counts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, base=1, cap=1, rand=0)


# --------------------------------------------------------------------------- plan data


def test_plan_migration_marks_committed_steps_and_dedupes_tables() -> None:
    m = migration(
        1,
        up="UPDATE t SET a = 1 FROM t AS t2 WHERE t.id = t2.id;\n"
        "CREATE INDEX CONCURRENTLY i ON t (a);",
    )
    steps = migration_steps(m, Direction.UP, server_version_num=PG15)
    lock = LockSummary("ROW EXCLUSIVE", False, False, False)

    planned = plan_migration(
        Selected(m, Direction.UP, resume_from=1),
        steps,
        lock_of=lambda s: (lock, ("t", "t")),
        estimates=lambda name: TableEstimate(name, True, 1000, 8192, "reltuples"),
        timeouts=TIMEOUTS,
    )
    data = planned.to_dict()
    assert [s["skipped"] for s in data["steps"]] == [True, False]
    assert [s["kind"] for s in data["steps"]] == ["transaction", "standalone"]
    assert [(s["lock_timeout_seconds"], s["statement_timeout_seconds"]) for s in data["steps"]] == [
        (2.0, 60.0),
        (300.0, 0.0),
    ]
    assert [s["nonblocking"] for s in data["steps"]] == [False, True]
    statement = data["steps"][0]["statements"][0]
    assert statement["line"] == 3
    assert statement["tables"] == [
        {
            "name": "t",
            "exists": True,
            "estimated_rows": 1000,
            "size_bytes": 8192,
            "source": "reltuples",
        }
    ]
    assert statement["lock"]["blocks"] == "neither reads nor writes"


@pytest.mark.parametrize(
    ("reads", "writes", "text"),
    [(True, True, "reads and writes"), (False, True, "writes"), (False, False, "neither")],
)
def test_lock_summary_words(reads: bool, writes: bool, text: str) -> None:
    assert LockSummary("X", reads, writes, False).blocks.startswith(text)


def test_plan_module_is_pure() -> None:
    code = (
        "import sys, bluegreen.migrations.plan; "
        "print(sorted(m for m in ('asyncio', 'asyncpg', 'aiohttp', 'random') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
