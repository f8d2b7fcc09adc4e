"""Representative rollout records in every phase and sub-state, reached by real transitions.

Other machine tests import :data:`STATES` and :func:`build`. The tests here
check that each builder lands where its name says and that every record
satisfies the invariants and survives a JSON round trip.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bluegreen.controller.machine import Abort as AbortEvent
from bluegreen.controller.machine import (
    AnalysisFailed,
    AppliedMigration,
    ContractApplied,
    ContractFailed,
    ContractRefused,
    ContractRequested,
    ContractState,
    DownMigrationsDone,
    Drained,
    Event,
    MigrationsApplied,
    Pause,
    Phase,
    PreflightPassed,
    Promote,
    RollbackStep,
    Rollout,
    RolloutOptions,
    SmokePassed,
    Start,
    Step,
    Tick,
    WeightsConfirmed,
    invariant_violation,
    transition,
)
from bluegreen.health.analysis import VerdictReason
from bluegreen.routing import Colour

STEPS = (Step(1000, 60.0), Step(5000, 60.0), Step(10_000, 60.0))
OPTIONS = RolloutOptions(
    confirm_timeout_seconds=30.0,
    drain_timeout_seconds=120.0,
    down_migrations_on_rollback=True,
    contract_grace_seconds=3600.0,
)
MIGS = (
    AppliedMigration("0007", "add_status_code", "expand", 0.2, True),
    AppliedMigration("0008", "backfill_status_code", "migrate", 3.5, True),
)


@dataclass(frozen=True)
class Built:
    """A state and the time of its last transition."""

    rollout: Rollout | None
    now: float


def run(rollout: Rollout | None, *steps: tuple[float, Event]) -> tuple[Rollout | None, float]:
    """Apply (time, event) pairs, asserting none is refused."""
    now = 0.0
    for now, event in steps:
        rollout, _ = transition(rollout, event, now)
    return rollout, now


def _start(**start_kw: object) -> Built:
    r, now = run(None, (0.0, Start("v2", STEPS, OPTIONS, salt="salt-1", **start_kw)))  # type: ignore[arg-type]
    return Built(r, now)


def _then(base: Callable[[], Built], *steps: tuple[float, Event]) -> Callable[[], Built]:
    def make() -> Built:
        b = base()
        r, now = run(b.rollout, *steps)
        return Built(r, now)

    return make


def _idle() -> Built:
    return Built(None, 0.0)


preflight = _start
migrating = _then(preflight, (1.0, PreflightPassed()))
smoke = _then(migrating, (2.0, MigrationsApplied(MIGS)))
ramp = _then(smoke, (3.0, SmokePassed()))
ramp_paused = _then(ramp, (4.0, Pause()))
ramp_promoting = _then(ramp, (4.0, Promote()))
bake = _then(ramp, (5.0, WeightsConfirmed(1000)))
bake_paused = _then(bake, (10.0, Pause()))
bake_last = _then(
    bake,
    (65.0, Tick()),
    (66.0, WeightsConfirmed(5000)),
    (126.0, Tick()),
    (127.0, WeightsConfirmed(10_000)),
)
promoted_draining = _then(bake_last, (187.0, Tick()))
promoted_waiting_grace = _then(promoted_draining, (188.0, Drained(Colour.BLUE)))
promoted_due = _then(promoted_waiting_grace, (3788.0, Tick()))
promoted_running = _then(promoted_due, (3789.0, ContractRequested()))
promoted_done = _then(promoted_running, (3790.0, ContractApplied()))
promoted_failed = _then(promoted_running, (3790.0, ContractFailed("lock timeout")))
promoted_refused = _then(promoted_running, (3790.0, ContractRefused("blue has 3 in flight")))
rolling_back_weights = _then(
    bake,
    (20.0, AnalysisFailed(VerdictReason.ERROR_RATE_VS_BASELINE, "green 9 % vs blue 0 %", 12.0)),
)
rolling_back_drain = _then(rolling_back_weights, (21.0, WeightsConfirmed(0)))
rolling_back_migrations = _then(migrating, (1.5, AbortEvent()))
rolling_back_down = _then(rolling_back_drain, (22.0, Drained(Colour.GREEN)))
rolled_back = _then(rolling_back_down, (23.0, DownMigrationsDone(MIGS[::-1])))
aborted = _then(preflight, (0.5, AbortEvent()))

STATES: dict[str, Callable[[], Built]] = {
    "idle": _idle,
    "preflight": preflight,
    "migrating": migrating,
    "smoke": smoke,
    "ramp": ramp,
    "ramp_paused": ramp_paused,
    "ramp_promoting": ramp_promoting,
    "bake": bake,
    "bake_paused": bake_paused,
    "bake_last": bake_last,
    "promoted_draining": promoted_draining,
    "promoted_waiting_grace": promoted_waiting_grace,
    "promoted_due": promoted_due,
    "promoted_running": promoted_running,
    "promoted_done": promoted_done,
    "promoted_failed": promoted_failed,
    "promoted_refused": promoted_refused,
    "rolling_back_weights": rolling_back_weights,
    "rolling_back_drain": rolling_back_drain,
    "rolling_back_migrations": rolling_back_migrations,
    "rolling_back_down": rolling_back_down,
    "rolled_back": rolled_back,
    "aborted": aborted,
}


def build(name: str) -> Built:
    """The named state, freshly built."""
    return STATES[name]()


def describe(r: Rollout | None) -> str:
    """``phase`` plus the sub-state that matters: ``promoted:due``, ``rolling_back:drain``."""
    if r is None:
        return "idle"
    if r.phase is Phase.PROMOTED:
        return f"promoted:{r.contract.value}"
    if r.phase is Phase.ROLLING_BACK:
        assert r.rollback_step is not None
        return f"rolling_back:{r.rollback_step.value}"
    return r.phase.value


EXPECTED_STATE = {
    "idle": ("idle", False, False),
    "preflight": ("preflight", False, False),
    "migrating": ("migrating", False, False),
    "smoke": ("smoke", False, False),
    "ramp": ("ramp", False, False),
    "ramp_paused": ("ramp", True, False),
    "ramp_promoting": ("ramp", False, True),
    "bake": ("bake", False, False),
    "bake_paused": ("bake", True, False),
    "bake_last": ("bake", False, False),
    "promoted_draining": ("promoted:draining", False, False),
    "promoted_waiting_grace": ("promoted:waiting_grace", False, False),
    "promoted_due": ("promoted:due", False, False),
    "promoted_running": ("promoted:running", False, False),
    "promoted_done": ("promoted:done", False, False),
    "promoted_failed": ("promoted:failed", False, False),
    "promoted_refused": ("promoted:refused", False, False),
    "rolling_back_weights": ("rolling_back:weights", False, False),
    "rolling_back_drain": ("rolling_back:drain", False, False),
    "rolling_back_migrations": ("rolling_back:migrations", False, False),
    "rolling_back_down": ("rolling_back:down_migrations", False, False),
    "rolled_back": ("rolled_back", False, False),
    "aborted": ("aborted", False, False),
}


def test_every_state_has_an_expectation() -> None:
    assert set(STATES) == set(EXPECTED_STATE)


@pytest.mark.parametrize("name", list(STATES))
def test_state_builder_lands_where_its_name_says(name: str) -> None:
    r = build(name).rollout
    where, paused, promoting = EXPECTED_STATE[name]
    assert describe(r) == where
    if r is not None:
        assert (r.paused, r.promoting) == (paused, promoting)


@pytest.mark.parametrize("name", [n for n in STATES if n != "idle"])
def test_state_is_consistent_and_round_trips_through_json(name: str) -> None:
    r = build(name).rollout
    assert r is not None
    assert invariant_violation(r) is None
    text = json.dumps(r.to_json(), allow_nan=False)
    assert Rollout.from_json(json.loads(text)) == r


def test_bake_last_is_the_hundred_percent_step() -> None:
    r = build("bake_last").rollout
    assert r is not None
    assert (r.step_index, r.target_bp, r.confirmed_bp) == (2, 10_000, 10_000)


def test_rollback_states_keep_the_failure_and_timing() -> None:
    r = build("rolling_back_down").rollout
    assert r is not None
    assert r.failure is not None
    assert r.fallback is not None
    assert r.failure.code is VerdictReason.ERROR_RATE_VS_BASELINE
    assert r.failure.phase is Phase.BAKE
    assert (r.fallback.failing_since, r.fallback.detected_at) == (12.0, 20.0)
    assert (r.fallback.weights_zero_at, r.fallback.drained_at) == (21.0, 22.0)
    assert r.rollback_step is RollbackStep.DOWN_MIGRATIONS
    assert r.contract is ContractState.NOT_DUE
