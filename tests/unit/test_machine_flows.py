"""Rollout state machine behaviour, path by path, with the full state asserted."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from bluegreen.controller.conditions import Fact, Reason
from bluegreen.controller.machine import (
    DEFAULT_STEPS,
    MAX_LOG_ENTRIES,
    Abort,
    Action,
    AnalysisFailed,
    AnalysisInconclusive,
    AppliedMigration,
    CancelMigrations,
    CheckItem,
    ContractApplied,
    ContractRefused,
    ContractRequested,
    ContractState,
    DownMigrationsDone,
    DownMigrationsFailed,
    Drained,
    Event,
    MigrationFailed,
    MigrationsApplied,
    MigrationsCancelled,
    Notify,
    Pause,
    Phase,
    PreflightFailed,
    PreflightPassed,
    Promote,
    Resume,
    RollbackStep,
    Rollout,
    RolloutOptions,
    RunContract,
    RunDownMigrations,
    RunMigrations,
    RunPreflight,
    RunSmoke,
    ScheduleTick,
    SetWeights,
    SmokeFailed,
    SmokePassed,
    SmokeResult,
    Start,
    StartAnalysis,
    Step,
    StopAnalysis,
    Tick,
    WaitDrained,
    WeightsConfirmed,
    allowed_events,
    invariant_violation,
    normalize_steps,
    resume,
    transition,
)
from bluegreen.errors import IllegalTransitionError, RolloutRecordError
from bluegreen.health.analysis import VerdictReason
from bluegreen.routing import Colour
from tests.unit.test_machine_states import MIGS, OPTIONS, STEPS, build

NO_DOWN = replace(OPTIONS, down_migrations_on_rollback=False)


def effects(actions: tuple[Action, ...]) -> list[Action]:
    """Actions without the notifications (asserted separately)."""
    return [a for a in actions if not isinstance(a, Notify)]


def facts(r: Rollout) -> list[str]:
    return [e.fact.value for e in r.log]


def must(r: Rollout | None) -> Rollout:
    assert r is not None
    return r


def to_ramp(options: RolloutOptions = OPTIONS, steps: tuple[Step, ...] = STEPS) -> Rollout:
    r, _ = transition(None, Start("v2", steps, options, salt="s"), 0.0)
    r, _ = transition(r, PreflightPassed(), 1.0)
    r, _ = transition(r, MigrationsApplied(MIGS), 2.0)
    r, _ = transition(r, SmokePassed(), 3.0)
    return r


def promote_fully(r: Rollout, now: float) -> tuple[Rollout, float]:
    """Drive a rollout in ramp through every step to promoted."""
    while r.phase is not Phase.PROMOTED:
        if r.phase is Phase.RAMP:
            now += 1.0
            r, _ = transition(r, WeightsConfirmed(r.green_bp(r.target_bp)), now)
        else:
            now += r.current_step.bake_seconds
            r, _ = transition(r, Tick(), now)
    return r, now


# --------------------------------------------------------------------------- happy path


def test_full_rollout_sets_each_weight_bakes_it_and_promotes() -> None:
    r, a = transition(None, Start("v2", STEPS, OPTIONS, salt="s"), 0.0)
    assert (r.id, r.phase, r.target, r.from_colour) == (
        1,
        Phase.PREFLIGHT,
        Colour.GREEN,
        Colour.BLUE,
    )
    assert effects(a) == [RunPreflight("v2", Colour.GREEN)]

    r, a = transition(r, PreflightPassed(), 1.0)
    assert (r.phase, r.migrations_in_flight) == (Phase.MIGRATING, True)
    assert effects(a) == [RunMigrations("v2", ("expand", "migrate"))]

    r, a = transition(r, MigrationsApplied(MIGS), 2.0)
    assert (r.phase, r.migrations_in_flight, r.results.migrations) == (Phase.SMOKE, False, MIGS)
    assert effects(a) == [RunSmoke(Colour.GREEN, Colour.BLUE)]

    r, a = transition(r, SmokePassed(), 3.0)
    assert (r.phase, r.step_index, r.target_bp, r.confirmed_bp) == (Phase.RAMP, 0, 1000, 0)
    assert effects(a) == [
        SetWeights(1000, "s"),
        ScheduleTick(33.0),
        StartAnalysis(Colour.GREEN, Colour.BLUE),
    ]

    r, a = transition(r, WeightsConfirmed(1000), 4.0)
    assert (r.phase, r.confirmed_bp, r.bake_started_at, r.deadline) == (Phase.BAKE, 1000, 4.0, None)
    assert effects(a) == [ScheduleTick(64.0)]

    r, a = transition(r, Tick(), 64.0)
    assert (r.phase, r.step_index, r.target_bp, r.confirmed_bp) == (Phase.RAMP, 1, 5000, 1000)
    assert effects(a) == [SetWeights(5000, "s"), ScheduleTick(94.0)]

    r, a = transition(r, WeightsConfirmed(5000), 65.0)
    r, a = transition(r, Tick(), 125.0)
    assert effects(a) == [SetWeights(10_000, "s"), ScheduleTick(155.0)]
    r, a = transition(r, WeightsConfirmed(10_000), 126.0)
    assert (r.phase, r.step_index) == (Phase.BAKE, 2)
    r, a = transition(r, Tick(), 186.0)
    assert (r.phase, r.finished_at, r.contract, r.live_colour) == (
        Phase.PROMOTED,
        186.0,
        ContractState.DRAINING,
        Colour.GREEN,
    )
    assert effects(a) == [StopAnalysis(), WaitDrained(Colour.BLUE)]
    assert r.outcome is Phase.PROMOTED
    assert facts(r) == [
        "rollout_started",
        "preflight_passed",
        "migrations_applied",
        "smoke_passed",
        "weights_requested",
        "step_reached",
        "weights_requested",
        "step_reached",
        "weights_requested",
        "step_reached",
        "rollout_promoted",
    ]


def test_notifications_carry_rollout_id_phase_and_message() -> None:
    _, actions = transition(None, Start("v2"), 0.0)
    assert actions[-1] == Notify(
        Fact.ROLLOUT_STARTED,
        1,
        Phase.PREFLIGHT,
        "rollout 1 of v2 started: green is the target, blue is live",
        None,
    )


def test_zero_bake_step_moves_on_as_soon_as_confirmed() -> None:
    r = to_ramp(steps=(Step(1000, 0.0), Step(10_000, 30.0)))
    r, a = transition(r, WeightsConfirmed(1000), 4.0)
    assert (r.phase, r.step_index, r.target_bp) == (Phase.RAMP, 1, 10_000)
    assert effects(a) == [SetWeights(10_000, "s"), ScheduleTick(34.0)]


def test_default_steps_are_10_50_100_percent() -> None:
    assert [s.weight_bp for s in DEFAULT_STEPS] == [1000, 5000, 10_000]


# --------------------------------------------------------------------------- roles


def test_roles_alternate_over_consecutive_rollouts() -> None:
    r, now = promote_fully(to_ramp(), 3.0)
    assert r.live_colour is Colour.GREEN

    r2, a = transition(r, Start("v3", STEPS, OPTIONS, salt="t"), now + 10)
    assert (r2.id, r2.target, r2.from_colour) == (2, Colour.BLUE, Colour.GREEN)
    assert effects(a) == [RunPreflight("v3", Colour.BLUE)]
    r2, _ = transition(r2, PreflightPassed(), now + 11)
    r2, _ = transition(r2, MigrationsApplied(()), now + 12)
    r2, a = transition(r2, SmokePassed(), now + 13)
    assert effects(a)[0] == SetWeights(9000, "t")  # blue gets 10 %: green goes down
    assert effects(a)[2] == StartAnalysis(Colour.BLUE, Colour.GREEN)

    weights = []
    t = now + 13
    while r2.phase is not Phase.PROMOTED:
        if r2.phase is Phase.RAMP:
            weights.append(r2.green_bp(r2.target_bp))
            t += 1
            r2, _ = transition(r2, WeightsConfirmed(r2.green_bp(r2.target_bp)), t)
        else:
            t += 60
            r2, a = transition(r2, Tick(), t)
    assert weights == [9000, 5000, 0]
    assert r2.live_colour is Colour.BLUE
    assert effects(a) == [StopAnalysis(), WaitDrained(Colour.GREEN)]

    r3, _ = transition(r2, Start("v4"), t + 1)
    assert (r3.id, r3.target) == (3, Colour.GREEN)


def test_after_a_rollback_the_next_rollout_targets_the_same_colour() -> None:
    r = must(build("rolled_back").rollout)
    r2, _ = transition(r, Start("v2.1"), 100.0)
    assert (r2.id, r2.target) == (r.id + 1, Colour.GREEN)


@pytest.mark.parametrize(
    ("green_bp", "target"),
    [(0, Colour.GREEN), (10_000, Colour.BLUE)],
    ids=["blue-live", "green-live"],
)
def test_current_weights_decide_the_live_colour(green_bp: int, target: Colour) -> None:
    r, _ = transition(None, Start("v2", current_green_bp=green_bp), 0.0)
    assert r.target is target


def test_start_with_split_weights_is_refused() -> None:
    with pytest.raises(IllegalTransitionError) as info:
        transition(None, Start("v2", current_green_bp=2500), 0.0)
    assert "weights are split (green 25 %)" in str(info.value)
    assert "bluegreen weights set" in str(info.value)


# --------------------------------------------------------------------------- pause / resume


def test_pause_freezes_the_bake_and_resume_continues_with_the_time_left() -> None:
    r = to_ramp()
    r, _ = transition(r, WeightsConfirmed(1000), 5.0)  # bake 60 s: due at 65
    r, a = transition(r, Pause(), 25.0)  # 20 s baked
    assert (r.paused, r.bake_started_at, r.bake_elapsed) == (True, None, 20.0)
    assert r.hold is not None
    assert r.hold.code is Reason.OPERATOR_PAUSE
    assert effects(a) == []
    r, a = transition(r, Tick(), 65.0)  # the old timer fires while paused: nothing
    assert a == ()
    assert r.phase is Phase.BAKE
    r, a = transition(r, Resume(), 100.0)
    assert (r.paused, r.bake_started_at, r.bake_elapsed) == (False, 100.0, 20.0)
    assert effects(a) == [ScheduleTick(140.0)]
    r, a = transition(r, Tick(), 139.0)  # early: re-arm, no step change
    assert (r.phase, effects(a)) == (Phase.BAKE, [ScheduleTick(140.0)])
    r, a = transition(r, Tick(), 140.0)
    assert (r.phase, r.step_index) == (Phase.RAMP, 1)


def test_several_pauses_add_up() -> None:
    r = to_ramp()
    r, _ = transition(r, WeightsConfirmed(1000), 0.0)
    for start in (0.0, 100.0, 200.0):  # bake 10 s in each of three windows
        if start:
            r, _ = transition(r, Resume(), start)
        r, _ = transition(r, Pause(), start + 10.0)
    assert r.bake_elapsed == pytest.approx(30.0)
    assert r.bake_remaining_at(1000.0) == pytest.approx(30.0)


def test_pause_during_ramp_starts_the_bake_paused() -> None:
    r = to_ramp()
    r, _ = transition(r, Pause(), 3.5)
    r, a = transition(r, WeightsConfirmed(1000), 4.0)
    assert (r.phase, r.paused, r.bake_started_at, r.bake_elapsed) == (Phase.BAKE, True, None, 0.0)
    assert effects(a) == []
    r, a = transition(r, Resume(), 50.0)
    assert effects(a) == [ScheduleTick(110.0)]


def test_inconclusive_analysis_pauses_and_an_operator_resumes() -> None:
    r = to_ramp()
    r, _ = transition(r, WeightsConfirmed(1000), 5.0)
    r, a = transition(r, AnalysisInconclusive(VerdictReason.NOT_ENOUGH_DATA, "3 requests"), 15.0)
    assert r.hold is not None
    assert (r.hold.code, r.hold.message, r.bake_elapsed) == (
        Reason.ANALYSIS_INCONCLUSIVE,
        "3 requests",
        10.0,
    )
    assert isinstance(a[-1], Notify)
    assert a[-1].reason == Reason.ANALYSIS_INCONCLUSIVE
    r, a = transition(r, Resume(), 20.0)
    assert effects(a) == [ScheduleTick(70.0)]


def test_analysis_failure_while_paused_still_falls_back() -> None:
    r = must(build("bake_paused").rollout)
    r, a = transition(r, AnalysisFailed(VerdictReason.PROBE_FAILED, "green down"), 30.0)
    assert (r.phase, r.paused, r.rollback_step) == (Phase.ROLLING_BACK, False, RollbackStep.WEIGHTS)
    assert effects(a)[0] == SetWeights(0, "salt-1")


# --------------------------------------------------------------------------- promote


def test_promote_skips_to_100_percent_and_waits_for_confirmation() -> None:
    r = must(build("bake").rollout)  # step 1 at 10 %
    r, a = transition(r, Promote(), 10.0)
    assert (r.phase, r.promoting, r.step_index, r.target_bp) == (Phase.RAMP, True, 2, 10_000)
    assert effects(a) == [SetWeights(10_000, "salt-1"), ScheduleTick(40.0)]
    r, a = transition(r, WeightsConfirmed(1000), 11.0)  # a late answer for the old weight
    assert (r.phase, a) == (Phase.RAMP, ())
    r, a = transition(r, WeightsConfirmed(10_000), 12.0)
    assert (r.phase, r.finished_at) == (Phase.PROMOTED, 12.0)
    assert effects(a) == [StopAnalysis(), WaitDrained(Colour.BLUE)]
    assert "promotion_requested" in facts(r)


def test_promote_while_ramping_to_100_percent_just_skips_the_bake() -> None:
    r = must(build("bake_last").rollout)
    r, _ = transition(r, Pause(), 130.0)
    r, _ = transition(r, Promote(), 131.0)
    assert (r.phase, r.paused) == (Phase.PROMOTED, False)


def test_promote_while_paused_clears_the_pause() -> None:
    r = must(build("ramp_paused").rollout)
    r, _ = transition(r, Promote(), 5.0)
    assert (r.paused, r.promoting) == (False, True)


def test_confirmation_timeout_during_promotion_falls_back() -> None:
    r = must(build("ramp_promoting").rollout)
    r, _ = transition(r, Tick(), 4.0 + 30.0)
    assert r.failure is not None
    assert (r.phase, r.failure.code) == (Phase.ROLLING_BACK, Reason.WEIGHTS_NOT_CONFIRMED)


# --------------------------------------------------------------------------- fallback


def test_fallback_sends_zero_first_and_records_detection_timing() -> None:
    r = must(build("bake").rollout)
    fail = AnalysisFailed(VerdictReason.ERROR_RATE_VS_BASELINE, "green 9 % vs blue 0.1 %", 14.0)
    r, a = transition(r, fail, 20.0)
    assert a[0] == SetWeights(0, "salt-1")  # before anything else, notifications included
    assert effects(a) == [SetWeights(0, "salt-1"), StopAnalysis(), ScheduleTick(50.0)]
    assert r.failure is not None
    assert (r.failure.code, r.failure.phase, r.failure.at) == (
        VerdictReason.ERROR_RATE_VS_BASELINE,
        Phase.BAKE,
        20.0,
    )
    assert (r.target_bp, r.confirmed_bp, r.analysis_running) == (0, 1000, False)
    r, a = transition(r, WeightsConfirmed(0), 20.25)
    assert r.fallback is not None
    assert r.fallback.detection_seconds == 6.0
    assert r.fallback.fallback_seconds == pytest.approx(6.25)
    assert effects(a) == [WaitDrained(Colour.GREEN), ScheduleTick(140.25)]
    assert "6.2 s after the first failing measurement, 250 ms after" in r.log[-1].message


def test_failing_since_in_the_future_is_clamped_to_now() -> None:
    r = must(build("bake").rollout)
    r, _ = transition(r, AnalysisFailed(VerdictReason.ERROR_RATE, "x", failing_since=99.0), 20.0)
    assert r.fallback is not None
    assert r.fallback.failing_since == 20.0


def test_without_down_migrations_the_rollback_ends_after_drain() -> None:
    r = to_ramp(NO_DOWN)
    r, _ = transition(r, WeightsConfirmed(1000), 4.0)
    r, _ = transition(r, AnalysisFailed(VerdictReason.LATENCY_VS_BASELINE, "slow"), 10.0)
    r, _ = transition(r, WeightsConfirmed(0), 10.1)
    r, a = transition(r, Drained(Colour.GREEN), 11.0)
    assert (r.phase, r.finished_at, effects(a)) == (Phase.ROLLED_BACK, 11.0, [])
    assert r.results.down_migrations == ()
    assert r.outcome is Phase.ROLLED_BACK


def test_down_migrations_revert_newest_first_and_stop_at_an_irreversible_one() -> None:
    migs = (
        AppliedMigration("0001", "a", "expand", 0.1, True),
        AppliedMigration("0002", "b", "migrate", 0.1, False),
        AppliedMigration("0003", "c", "expand", 0.1, True),
        AppliedMigration("0004", "d", "expand", 0.1, True),
    )
    r, _ = transition(None, Start("v2", STEPS, OPTIONS), 0.0)
    r, _ = transition(r, PreflightPassed(), 1.0)
    r, _ = transition(r, MigrationsApplied(migs), 2.0)
    r, a = transition(
        r, SmokeFailed((SmokeResult(Colour.GREEN, "GET /orders", False, "500"),)), 3.0
    )
    assert r.failure is not None
    assert (r.failure.code, r.rollback_step) == (Reason.SMOKE_FAILED, RollbackStep.DOWN_MIGRATIONS)
    assert effects(a) == [RunDownMigrations(("0004", "0003"))]
    assert r.results.notes == (
        "migration 0002 is irreversible; it and the ones before it stay applied",
    )
    assert r.fallback is None  # green never had traffic


def test_failed_down_migrations_still_finish_the_rollback_with_a_note() -> None:
    r = must(build("rolling_back_down").rollout)
    r, _ = transition(r, DownMigrationsFailed("column in use", MIGS[1:]), 30.0)
    assert (r.phase, r.results.down_migrations) == (Phase.ROLLED_BACK, MIGS[1:])
    assert r.results.notes[-1] == (
        "down-migrations failed after reverting 1: column in use. Traffic is on blue; "
        "check the schema with `bluegreen migrate status`"
    )
    assert facts(r)[-2:] == ["down_migrations_failed", "rollout_rolled_back"]


def test_drain_timeout_skips_down_migrations() -> None:
    r = must(build("rolling_back_drain").rollout)
    r, a = transition(r, Tick(), 21.0 + 120.0)
    assert r.phase is Phase.ROLLED_BACK
    assert r.fallback is not None
    assert r.fallback.drain_timed_out
    assert not any(isinstance(x, RunDownMigrations) for x in a)
    assert "down-migrations skipped" in r.results.notes[-1]


def test_unconfirmed_zero_is_asked_again_not_given_up() -> None:
    r = must(build("rolling_back_weights").rollout)
    r, a = transition(r, Tick(), 20.0 + 30.0)
    assert (r.phase, r.rollback_step, r.deadline) == (
        Phase.ROLLING_BACK,
        RollbackStep.WEIGHTS,
        80.0,
    )
    assert effects(a) == [SetWeights(0, "salt-1"), ScheduleTick(80.0)]
    assert facts(r)[-1] == "weights_retried"


def test_abort_ends_aborted_with_the_operator_reason() -> None:
    r = must(build("bake").rollout)
    r, _ = transition(r, Abort("wrong build"), 10.0)
    r, _ = transition(r, WeightsConfirmed(0), 10.1)
    r, _ = transition(r, Drained(Colour.GREEN), 10.2)
    done = DownMigrationsDone(MIGS[::-1])
    r, _ = transition(r, done, 11.0)
    assert r.failure is not None
    assert (r.phase, r.failure.code, r.failure.message, r.failure.by_operator) == (
        Phase.ABORTED,
        Reason.OPERATOR_ABORT,
        "wrong build",
        True,
    )
    assert r.results.down_migrations == done.reverted


def test_abort_during_migrations_cancels_them_and_waits_for_what_they_applied() -> None:
    r = must(build("migrating").rollout)
    r, a = transition(r, Abort(), 1.5)
    assert effects(a) == [CancelMigrations("v2")]
    assert (r.rollback_step, r.migrations_in_flight) == (RollbackStep.MIGRATIONS, True)
    r, a = transition(r, MigrationsCancelled(MIGS[:1]), 4.0)
    assert effects(a) == [RunDownMigrations(("0007",))]
    assert r.results.migrations == MIGS[:1]


def test_migration_failure_records_what_was_applied_before() -> None:
    r = must(build("migrating").rollout)
    r, a = transition(r, MigrationFailed("0008: lock timeout", MIGS[:1]), 2.0)
    assert r.failure is not None
    assert (r.failure.code, r.failure.message) == (
        Reason.MIGRATION_FAILED,
        "migrations failed: 0008: lock timeout",
    )
    assert effects(a) == [RunDownMigrations(("0007",))]


def test_preflight_failure_lists_the_failed_items() -> None:
    r = must(build("preflight").rollout)
    items = (CheckItem("lint", True), CheckItem("backup", False, "older than 24 h"))
    r, a = transition(r, PreflightFailed(items), 1.0)
    assert r.failure is not None
    assert (r.phase, r.failure.code) == (Phase.ROLLED_BACK, Reason.PREFLIGHT_FAILED)
    assert r.failure.message == "preflight failed: backup (older than 24 h)"
    assert r.results.preflight == items
    assert effects(a) == []


def test_old_colour_broken_by_the_migrations_has_its_own_reason() -> None:
    r = must(build("smoke").rollout)
    results = (
        SmokeResult(Colour.GREEN, "GET /orders", True),
        SmokeResult(Colour.BLUE, "POST /orders", False, "column status does not exist"),
    )
    r, _ = transition(r, SmokeFailed(results), 3.0)
    assert r.failure is not None
    assert r.failure.code is Reason.OLD_COLOUR_SMOKE_FAILED
    assert "blue, the live colour" in r.failure.message
    assert "column status does not exist" in r.failure.message


def test_old_colour_smoke_can_be_turned_off() -> None:
    r, _ = transition(None, Start("v2", options=RolloutOptions(check_old_colour=False)), 0.0)
    r, _ = transition(r, PreflightPassed(), 1.0)
    r, a = transition(r, MigrationsApplied(), 2.0)
    assert effects(a) == [RunSmoke(Colour.GREEN, None)]


# --------------------------------------------------------------------------- contract


def test_contract_waits_for_drain_then_grace_then_the_operator() -> None:
    r = must(build("promoted_draining").rollout)
    with pytest.raises(IllegalTransitionError) as info:
        transition(r, ContractRequested(), 187.5)
    assert "blue, the old colour, still has requests in flight" in str(info.value)

    r, a = transition(r, Drained(Colour.BLUE), 200.0)
    assert (r.contract, r.contract_due_at) == (ContractState.WAITING_GRACE, 3800.0)
    assert effects(a) == [ScheduleTick(3800.0)]
    with pytest.raises(IllegalTransitionError) as info:
        transition(r, ContractRequested(), 200.0)
    assert "ends in 1 h" in str(info.value)

    r, a = transition(r, Tick(), 3800.0)
    assert (r.contract, effects(a)) == (ContractState.DUE, [])
    assert facts(r)[-1] == "contract_due"
    r, a = transition(r, ContractRequested(), 4000.0)
    assert (r.contract, effects(a)) == (ContractState.RUNNING, [RunContract("v2", Colour.BLUE)])
    r, _ = transition(r, ContractApplied(MIGS), 4001.0)
    assert (r.contract, r.results.contract) == (ContractState.DONE, MIGS)


def test_auto_contract_runs_when_the_grace_period_ends() -> None:
    r = to_ramp(replace(OPTIONS, auto_contract=True, contract_grace_seconds=0.0))
    r, now = promote_fully(r, 3.0)
    r, a = transition(r, Drained(Colour.BLUE), now + 1)
    assert r.contract is ContractState.RUNNING
    assert effects(a) == [RunContract("v2", Colour.BLUE)]


def test_skip_grace_contracts_early_but_never_before_the_drain() -> None:
    r = must(build("promoted_waiting_grace").rollout)
    r, a = transition(r, ContractRequested(skip_grace=True), 300.0)
    assert effects(a) == [RunContract("v2", Colour.BLUE)]
    draining = must(build("promoted_draining").rollout)
    with pytest.raises(IllegalTransitionError):
        transition(draining, ContractRequested(skip_grace=True), 300.0)


def test_refused_contract_can_be_retried() -> None:
    r = must(build("promoted_running").rollout)
    r, a = transition(r, ContractRefused("blue has 2 requests in flight"), 3790.0)
    assert r.contract is ContractState.REFUSED
    assert isinstance(a[-1], Notify)
    assert a[-1].reason == Reason.CONTRACT_REFUSED_OLD_COLOUR_SERVING
    r, a = transition(r, ContractRequested(), 3800.0)
    assert effects(a) == [RunContract("v2", Colour.BLUE)]


def test_a_new_rollout_cannot_start_while_a_contract_runs() -> None:
    r = must(build("promoted_running").rollout)
    with pytest.raises(IllegalTransitionError) as info:
        transition(r, Start("v3"), 3800.0)
    assert "contract migrations of rollout 1 are running" in str(info.value)


def test_a_new_rollout_may_start_before_the_contract_and_targets_the_old_colour() -> None:
    r = must(build("promoted_due").rollout)
    r2, _ = transition(r, Start("v3"), 3800.0)
    assert (r2.target, r2.contract) == (Colour.BLUE, ContractState.NOT_DUE)


# --------------------------------------------------------------------------- crash and resume


def test_resume_mid_bake_continues_with_the_time_left() -> None:
    r = must(build("bake").rollout)  # confirmed at 5 s, bake 60 s: due at 65
    stored = json.loads(json.dumps(r.to_json()))
    # the controller is killed at 20 s and a new one starts at 30 s
    r2, a = resume(Rollout.from_json(stored), 30.0)
    r2 = must(r2)
    assert effects(a) == [
        SetWeights(1000, "salt-1", wait_confirm=False),
        StartAnalysis(Colour.GREEN, Colour.BLUE),
        ScheduleTick(65.0),
    ]
    assert (r2.phase, r2.step_index, r2.target_bp) == (Phase.BAKE, 0, 1000)
    assert r2.bake_remaining_at(30.0) == 35.0
    assert "step 1/3, 35 s of bake left" in r2.log[-1].message


def test_resume_after_the_bake_ran_out_keeps_the_weight_until_the_next_tick() -> None:
    r = must(build("bake").rollout)
    r2, a = resume(r, 500.0)
    r2 = must(r2)
    assert effects(a)[0] == SetWeights(1000, "salt-1", wait_confirm=False)
    assert effects(a)[-1] == ScheduleTick(65.0)  # already due: the runner ticks at once
    r3, a = transition(r2, Tick(), 500.0)
    assert (r3.step_index, effects(a)[0]) == (1, SetWeights(5000, "salt-1"))


def test_resume_of_a_paused_bake_stays_paused() -> None:
    r = must(build("bake_paused").rollout)
    r2, a = resume(r, 1000.0)
    r2 = must(r2)
    assert (r2.paused, r2.bake_remaining_at(1000.0)) == (True, 55.0)
    assert not any(isinstance(x, ScheduleTick) for x in a)


def test_resume_mid_ramp_asks_for_the_same_weight_with_a_fresh_deadline() -> None:
    r = must(build("ramp").rollout)
    r2, a = resume(r, 100.0)
    r2 = must(r2)
    assert effects(a) == [
        SetWeights(1000, "salt-1"),
        ScheduleTick(130.0),
        StartAnalysis(Colour.GREEN, Colour.BLUE),
    ]
    assert (r2.target_bp, r2.deadline) == (1000, 130.0)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("rolling_back_weights", [SetWeights(0, "salt-1"), ScheduleTick(130.0)]),
        ("rolling_back_drain", [WaitDrained(Colour.GREEN), ScheduleTick(220.0)]),
        ("rolling_back_migrations", [CancelMigrations("v2")]),
        ("rolling_back_down", [RunDownMigrations(("0008", "0007"))]),
        ("promoted_draining", [WaitDrained(Colour.BLUE)]),
        ("promoted_waiting_grace", [ScheduleTick(3788.0)]),
        ("promoted_running", [RunContract("v2", Colour.BLUE)]),
        ("preflight", [RunPreflight("v2", Colour.GREEN)]),
        ("migrating", [RunMigrations("v2")]),
        ("smoke", [RunSmoke(Colour.GREEN, Colour.BLUE)]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_resume_redoes_the_current_step(state: str, expected: list[Action]) -> None:
    r = must(build(state).rollout)
    r2, a = resume(r, 100.0)
    r2 = must(r2)
    assert effects(a) == expected
    assert (r2.phase, r2.rollback_step, r2.contract) == (r.phase, r.rollback_step, r.contract)
    assert facts(r2)[-1] == "controller_restarted"


@pytest.mark.parametrize("state", ["rolled_back", "aborted", "promoted_done"])
def test_resume_of_a_finished_rollout_does_nothing(state: str) -> None:
    r = must(build(state).rollout)
    assert resume(r, 1e6) == (r, ())


def test_resume_without_a_rollout_does_nothing() -> None:
    assert resume(None, 0.0) == (None, ())


def test_a_crash_at_every_step_resumes_to_the_same_end() -> None:
    """Persist after every transition, reload, resume: the rollout still promotes."""
    r: Rollout | None = None
    now = 0.0
    script: list[Event] = [
        Start("v2", STEPS, OPTIONS, salt="s"),
        PreflightPassed(),
        MigrationsApplied(MIGS),
        SmokePassed(),
    ]
    for event in script:
        now += 1
        r, _ = transition(r, event, now)
        r, _ = resume(Rollout.from_json(json.loads(json.dumps(must(r).to_json()))), now)
    r = must(r)
    while r.phase is not Phase.PROMOTED:
        now += 1 if r.phase is Phase.RAMP else 60
        event = WeightsConfirmed(r.green_bp(r.target_bp)) if r.phase is Phase.RAMP else Tick()
        r, _ = transition(r, event, now)
        r = must(resume(Rollout.from_json(json.loads(json.dumps(r.to_json()))), now)[0])
    assert r.confirmed_bp == 10_000


# --------------------------------------------------------------------------- errors


def test_refusal_message_names_the_phase_what_is_allowed_and_the_next_command() -> None:
    r = must(build("smoke").rollout)
    with pytest.raises(IllegalTransitionError) as info:
        transition(r, Promote(), 3.0)
    assert str(info.value) == (
        'cannot promote: rollout phase is "smoke"; promote is allowed from ramp or bake. '
        "See `bluegreen rollout status`"
    )
    assert (info.value.phase, info.value.event) == ("smoke", "promote")


@pytest.mark.parametrize(
    ("state", "event", "text"),
    [
        ("idle", Pause(), "no rollout has been started. Start one with `bluegreen rollout start`"),
        (
            "bake",
            Start("v3"),
            "starting a rollout is allowed from idle, promoted, rolled_back or aborted",
        ),
        ("bake_paused", Pause(), "already paused"),
        ("bake", Resume(), "the rollout is not paused"),
        ("ramp_promoting", Promote(), "promotion to 100 % is in progress"),
        ("ramp_promoting", Pause(), "promotion to 100 % is in progress"),
        ("rolling_back_drain", Abort(), "already rolling back (error_rate_above_baseline)"),
        ("promoted_done", ContractRequested(), "are already applied"),
        ("promoted_running", ContractRequested(), "are running; wait for them"),
        ("bake", ContractRequested(), "contract is allowed from promoted"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else "",
)
def test_refusal_messages(state: str, event: object, text: str) -> None:
    r = build(state).rollout
    with pytest.raises(IllegalTransitionError) as info:
        transition(r, event, 1.0)  # type: ignore[arg-type]
    assert text in str(info.value)


def test_now_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        transition(None, Start("v2"), math.nan)


def test_allowed_events_lists_the_operator_commands_of_the_phase() -> None:
    assert allowed_events(None) == (Start,)
    assert allowed_events(build("bake").rollout) == (Pause, Resume, Promote, Abort)
    assert allowed_events(build("promoted_due").rollout) == (Start, ContractRequested)


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ((), "at least one step"),
        ((Step(5000, 1), Step(1000, 1)), "step 2 (10 %) must be above step 1 (50 %)"),
        ((Step(5000, 1), Step(5000, 1)), "must be above"),
    ],
    ids=["empty", "decreasing", "repeated"],
)
def test_bad_steps_are_refused(steps: tuple[Step, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        Start("v2", steps)


def test_a_missing_100_percent_step_is_added_without_bake() -> None:
    assert normalize_steps((Step(1000, 30), Step(5000, 30)))[-1] == Step(10_000, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"weight_bp": 0, "bake_seconds": 1}, "1..10000"),
        ({"weight_bp": 10_001, "bake_seconds": 1}, "1..10000"),
        ({"weight_bp": True, "bake_seconds": 1}, "1..10000"),
        ({"weight_bp": 100, "bake_seconds": -1}, ">= 0"),
        ({"weight_bp": 100, "bake_seconds": math.inf}, "finite"),
    ],
    ids=["zero", "above-100", "bool", "negative-bake", "infinite-bake"],
)
def test_bad_step_values_are_refused(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Step(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "version", ["", "   ", "a\nb", "x" * 201], ids=["empty", "blank", "newline", "long"]
)
def test_bad_version_labels_are_refused(version: str) -> None:
    with pytest.raises(ValueError, match="version label"):
        Start(version)


def test_transition_log_is_bounded() -> None:
    r = must(build("bake").rollout)
    t = 10.0
    for _ in range(MAX_LOG_ENTRIES):
        r, _ = transition(r, Pause(), t)
        r, _ = transition(r, Resume(), t + 0.001)
        t += 0.002
    assert len(r.log) == MAX_LOG_ENTRIES
    assert r.log[-1].fact is Fact.ROLLOUT_RESUMED


# --------------------------------------------------------------------------- JSON


def _stored(state: str = "rolling_back_down") -> dict[str, object]:
    data: dict[str, object] = json.loads(json.dumps(must(build(state).rollout).to_json()))
    return data


def _corrupt(mutate: object) -> str:
    data = _stored()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(RolloutRecordError) as info:
        Rollout.from_json(data)
    return str(info.value)


def test_json_is_plain_and_names_the_from_colour_and_schema() -> None:
    data = _stored()
    assert (data["schema"], data["from"], data["phase"], data["rollback_step"]) == (
        1,
        "blue",
        "rolling_back",
        "down_migrations",
    )
    assert json.loads(json.dumps(data, allow_nan=False)) == data


@pytest.mark.parametrize(
    ("mutate", "text"),
    [
        (lambda d: d.pop("phase"), "rollout.phase: missing"),
        (lambda d: d.update(phase="baking"), "rollout.phase: expected one of idle, preflight"),
        (
            lambda d: d.update(target_bp="10"),
            "rollout.target_bp: expected an integer 0..10000, got '10'",
        ),
        (lambda d: d.update(target_bp=10_001), "rollout.target_bp: expected an integer 0..10000"),
        (lambda d: d.update(started_at=None), "rollout.started_at: expected a finite number"),
        (lambda d: d.update(extra=1), "rollout.extra: unknown field"),
        (lambda d: d.update(schema=2), "schema 2; this bluegreen reads schema 1"),
        (
            lambda d: d.update({"from": "green"}),
            "rollout.from: must be the colour other than target",
        ),
        (lambda d: d["steps"].append({"weight_bp": 5000, "bake_seconds": 1}), "rollout.steps"),
        (lambda d: d["steps"][0].update(weight_bp=0), "rollout.steps[0].weight_bp"),
        (
            lambda d: d["results"]["migrations"][0].pop("reversible"),
            "rollout.results.migrations[0].reversible: missing",
        ),
        (lambda d: d["failure"].update(code="gremlins"), "unknown reason code 'gremlins'"),
        (lambda d: d["log"].append("x"), "]: expected an object, got 'x'"),
        (
            lambda d: d.update(rollback_step=None),
            "inconsistent: rollback_step None does not fit phase rolling_back",
        ),
        (lambda d: d.update(phase="bake", rollback_step=None), "inconsistent"),
        (
            lambda d: d["options"].update(confirm_timeout_seconds=-1),
            "confirm_timeout_seconds must be",
        ),
    ],
    ids=[
        "missing",
        "bad-enum",
        "string-int",
        "out-of-range",
        "null-float",
        "unknown-field",
        "schema",
        "from-colour",
        "steps-not-increasing",
        "step-weight",
        "nested-missing",
        "reason-code",
        "log-item",
        "inconsistent-rollback",
        "inconsistent-phase",
        "bad-option",
    ],
)
def test_corrupt_records_are_refused_with_the_path(mutate: object, text: str) -> None:
    message = _corrupt(mutate)
    assert text in message
    assert message.startswith("stored rollout record")


def test_a_record_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RolloutRecordError, match="rollout: expected an object, got"):
        Rollout.from_json(["not", "a", "record"])


def test_invariants_catch_an_inconsistent_record() -> None:
    r = must(build("bake").rollout)
    assert (
        invariant_violation(replace(r, target_bp=5000, peak_bp=5000))
        == "target_bp 5000 is not step 1's weight"
    )
