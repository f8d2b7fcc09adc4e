"""Every (state, event) pair: the allowed transition with its actions, ignored, or refused.

The expectations below are the whole behaviour of the transition table,
written out by hand (like h11's test_state.py). A pair missing from
``EXPECTED[event]`` must raise IllegalTransitionError and leave the record
unchanged; ``IGNORED`` means a stale answer: same record back, no action.
An outcome is ``"<phase>[:<sub-state>] | <Action>,<Action>,..."`` with the
action types in the exact order the runner must perform them.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from bluegreen.controller.machine import (
    Abort,
    AnalysisFailed,
    AnalysisInconclusive,
    CheckItem,
    ContractApplied,
    ContractFailed,
    ContractRefused,
    ContractRequested,
    DownMigrationsDone,
    DownMigrationsFailed,
    Drained,
    Event,
    MigrationFailed,
    MigrationsApplied,
    MigrationsCancelled,
    Pause,
    PreflightFailed,
    PreflightPassed,
    Promote,
    Restarted,
    Resume,
    Rollout,
    SmokeFailed,
    SmokePassed,
    SmokeResult,
    Start,
    Tick,
    WeightsConfirmed,
    invariant_violation,
    transition,
)
from bluegreen.errors import IllegalTransitionError
from bluegreen.health.analysis import VerdictReason
from bluegreen.routing import Colour
from tests.unit.test_machine_states import MIGS, STATES, build, describe

IGNORED = "ignored"
LATE = 1_000_000.0  # added to the state's time: every deadline and bake has passed

EventFactory = Callable[[Rollout | None], Event]


def _confirm_pending(r: Rollout | None) -> Event:
    return WeightsConfirmed(r.green_bp(r.target_bp) if r is not None else 0)


def _drained(which: str) -> EventFactory:
    def make(r: Rollout | None) -> Event:
        if r is None:
            return Drained(Colour.GREEN)
        return Drained(r.target if which == "target" else r.from_colour)

    return make


EVENTS: dict[str, tuple[EventFactory, float]] = {
    # name: (event for the state, seconds after the state's last transition)
    "start": (lambda r: Start("v3"), 0.0),
    "pause": (lambda r: Pause(), 0.0),
    "resume": (lambda r: Resume(), 0.0),
    "promote": (lambda r: Promote(), 0.0),
    "abort": (lambda r: Abort(), 0.0),
    "contract": (lambda r: ContractRequested(), 0.0),
    "contract_skip_grace": (lambda r: ContractRequested(skip_grace=True), 0.0),
    "restarted": (lambda r: Restarted(), 0.0),
    "preflight_passed": (lambda r: PreflightPassed((CheckItem("lint", True),)), 0.0),
    "preflight_failed": (lambda r: PreflightFailed((CheckItem("backup", False, "none"),)), 0.0),
    "migrations_applied": (lambda r: MigrationsApplied(MIGS), 0.0),
    "migration_failed": (lambda r: MigrationFailed("lock timeout", MIGS[:1]), 0.0),
    "migrations_cancelled": (lambda r: MigrationsCancelled(()), 0.0),
    "smoke_passed": (lambda r: SmokePassed((SmokeResult(Colour.GREEN, "GET /", True),)), 0.0),
    "smoke_failed": (
        lambda r: SmokeFailed((SmokeResult(Colour.GREEN, "GET /", False, "500"),)),
        0.0,
    ),
    "confirm_pending": (_confirm_pending, 0.0),
    "confirm_other": (lambda r: WeightsConfirmed(1234), 0.0),
    "drained_target": (_drained("target"), 0.0),
    "drained_old": (_drained("old"), 0.0),
    "tick_early": (lambda r: Tick(), 0.0),
    "tick_late": (lambda r: Tick(), LATE),
    "analysis_failed": (
        lambda r: AnalysisFailed(VerdictReason.ERROR_RATE, "green 20 % > 5 %"),
        0.0,
    ),
    "analysis_inconclusive": (
        lambda r: AnalysisInconclusive(VerdictReason.NOT_ENOUGH_DATA, "12 requests"),
        0.0,
    ),
    "down_done": (lambda r: DownMigrationsDone(MIGS[::-1]), 0.0),
    "down_failed": (lambda r: DownMigrationsFailed("cannot drop", ()), 0.0),
    "contract_applied": (lambda r: ContractApplied(), 0.0),
    "contract_failed": (lambda r: ContractFailed("lock timeout"), 0.0),
    "contract_refused": (lambda r: ContractRefused("blue serves 1 %"), 0.0),
}

TRAFFIC = ("ramp", "ramp_paused", "ramp_promoting", "bake", "bake_paused", "bake_last")
PROMOTED = (
    "promoted_draining",
    "promoted_waiting_grace",
    "promoted_due",
    "promoted_running",
    "promoted_done",
    "promoted_failed",
    "promoted_refused",
)
ROLLING_BACK = (
    "rolling_back_weights",
    "rolling_back_drain",
    "rolling_back_migrations",
    "rolling_back_down",
)
DONE = ("rolled_back", "aborted")
RESTARTABLE_PROMOTED = ("promoted_draining", "promoted_waiting_grace", "promoted_running")

FALLBACK = "rolling_back:weights | SetWeights,StopAnalysis,ScheduleTick,Notify"
TO_DOWN = "rolling_back:down_migrations | RunDownMigrations,Notify,Notify"
START = "preflight | RunPreflight,Notify"
RUN_CONTRACT = "promoted:running | RunContract,Notify"


def _all(names: tuple[str, ...], outcome: str) -> dict[str, str]:
    return dict.fromkeys(names, outcome)


EXPECTED: dict[str, dict[str, str]] = {
    "start": {
        "idle": START,
        **_all(PROMOTED, START),
        "promoted_running": "ILLEGAL",  # a contract migration is running
        **_all(DONE, START),
    },
    "pause": {
        "ramp": "ramp | Notify",
        "bake": "bake | Notify",
        "bake_last": "bake | Notify",
    },
    "resume": {
        "ramp_paused": "ramp | Notify",
        "bake_paused": "bake | ScheduleTick,Notify",
    },
    "promote": {
        "ramp": "ramp | SetWeights,ScheduleTick,Notify",
        "ramp_paused": "ramp | SetWeights,ScheduleTick,Notify",
        "bake": "ramp | SetWeights,ScheduleTick,Notify",
        "bake_paused": "ramp | SetWeights,ScheduleTick,Notify",
        "bake_last": "promoted:draining | StopAnalysis,WaitDrained,Notify",
    },
    "abort": {
        "preflight": "aborted | Notify,Notify",
        "migrating": "rolling_back:migrations | CancelMigrations,Notify",
        "smoke": TO_DOWN,
        **_all(TRAFFIC, FALLBACK),
    },
    "contract": {
        "promoted_due": RUN_CONTRACT,
        "promoted_failed": RUN_CONTRACT,
        "promoted_refused": RUN_CONTRACT,
    },
    "contract_skip_grace": {
        "promoted_waiting_grace": RUN_CONTRACT,
        "promoted_due": RUN_CONTRACT,
        "promoted_failed": RUN_CONTRACT,
        "promoted_refused": RUN_CONTRACT,
    },
    "restarted": {
        "preflight": "preflight | RunPreflight,Notify",
        "migrating": "migrating | RunMigrations,Notify",
        "smoke": "smoke | RunSmoke,Notify",
        "ramp": "ramp | SetWeights,ScheduleTick,StartAnalysis,Notify",
        "ramp_paused": "ramp | SetWeights,ScheduleTick,StartAnalysis,Notify",
        "ramp_promoting": "ramp | SetWeights,ScheduleTick,StartAnalysis,Notify",
        "bake": "bake | SetWeights,StartAnalysis,ScheduleTick,Notify",
        "bake_paused": "bake | SetWeights,StartAnalysis,Notify",
        "bake_last": "bake | SetWeights,StartAnalysis,ScheduleTick,Notify",
        "promoted_draining": "promoted:draining | WaitDrained,Notify",
        "promoted_waiting_grace": "promoted:waiting_grace | ScheduleTick,Notify",
        "promoted_due": IGNORED,
        "promoted_running": "promoted:running | RunContract,Notify",
        "promoted_done": IGNORED,
        "promoted_failed": IGNORED,
        "promoted_refused": IGNORED,
        "rolling_back_weights": "rolling_back:weights | SetWeights,ScheduleTick,Notify",
        "rolling_back_drain": "rolling_back:drain | WaitDrained,ScheduleTick,Notify",
        "rolling_back_migrations": "rolling_back:migrations | CancelMigrations,Notify",
        "rolling_back_down": "rolling_back:down_migrations | RunDownMigrations,Notify",
        **_all(DONE, IGNORED),
    },
    "preflight_passed": {
        "preflight": "migrating | RunMigrations,Notify",
        **_all(ROLLING_BACK + DONE, IGNORED),
    },
    "preflight_failed": {
        "preflight": "rolled_back | Notify,Notify",
        **_all(ROLLING_BACK + DONE, IGNORED),
    },
    "migrations_applied": {
        "migrating": "smoke | RunSmoke,Notify",
        **_all(ROLLING_BACK + DONE, IGNORED),
        "rolling_back_migrations": "rolling_back:down_migrations | RunDownMigrations,Notify",
    },
    "migration_failed": {
        "migrating": TO_DOWN,
        **_all(ROLLING_BACK + DONE, IGNORED),
        "rolling_back_migrations": "rolling_back:down_migrations | RunDownMigrations,Notify",
    },
    "migrations_cancelled": {
        **_all(ROLLING_BACK + DONE, IGNORED),
        "rolling_back_migrations": "aborted | Notify",
    },
    "smoke_passed": {
        "smoke": "ramp | SetWeights,ScheduleTick,StartAnalysis,Notify,Notify",
        **_all(ROLLING_BACK + DONE, IGNORED),
    },
    "smoke_failed": {
        "smoke": TO_DOWN,
        **_all(ROLLING_BACK + DONE, IGNORED),
    },
    "confirm_pending": {
        "ramp": "bake | ScheduleTick,Notify",
        "ramp_paused": "bake | Notify",
        "ramp_promoting": "promoted:draining | StopAnalysis,WaitDrained,Notify",
        **_all(("bake", "bake_paused", "bake_last", *PROMOTED, *ROLLING_BACK, *DONE), IGNORED),
        "rolling_back_weights": "rolling_back:drain | WaitDrained,ScheduleTick,Notify",
    },
    "confirm_other": _all(TRAFFIC + PROMOTED + ROLLING_BACK + DONE, IGNORED),
    "drained_target": {
        **_all(TRAFFIC + PROMOTED + ROLLING_BACK + DONE, IGNORED),
        "rolling_back_drain": TO_DOWN,
    },
    "drained_old": {
        **_all(TRAFFIC + PROMOTED + ROLLING_BACK + DONE, IGNORED),
        "promoted_draining": "promoted:waiting_grace | ScheduleTick,Notify",
    },
    "tick_early": {
        **_all(("preflight", "migrating", "smoke", *PROMOTED, *ROLLING_BACK, *DONE), IGNORED),
        "ramp": "ramp | ScheduleTick",
        "ramp_paused": "ramp | ScheduleTick",
        "ramp_promoting": "ramp | ScheduleTick",
        "bake": "bake | ScheduleTick",
        "bake_paused": IGNORED,
        "bake_last": "bake | ScheduleTick",
        "promoted_waiting_grace": "promoted:waiting_grace | ScheduleTick",
        "rolling_back_weights": "rolling_back:weights | ScheduleTick",
        "rolling_back_drain": "rolling_back:drain | ScheduleTick",
    },
    "tick_late": {
        **_all(("preflight", "migrating", "smoke", *PROMOTED, *ROLLING_BACK, *DONE), IGNORED),
        "ramp": FALLBACK,
        "ramp_paused": FALLBACK,
        "ramp_promoting": FALLBACK,
        "bake": "ramp | SetWeights,ScheduleTick,Notify",
        "bake_paused": IGNORED,
        "bake_last": "promoted:draining | StopAnalysis,WaitDrained,Notify",
        "promoted_waiting_grace": "promoted:due | Notify",
        "rolling_back_weights": "rolling_back:weights | SetWeights,ScheduleTick,Notify",
        "rolling_back_drain": "rolled_back | Notify,Notify",
    },
    "analysis_failed": {
        **_all(TRAFFIC, FALLBACK),
        **_all(PROMOTED + ROLLING_BACK + DONE, IGNORED),
    },
    "analysis_inconclusive": {
        "ramp": "ramp | Notify",
        "ramp_paused": IGNORED,
        "ramp_promoting": IGNORED,
        "bake": "bake | Notify",
        "bake_paused": IGNORED,
        "bake_last": "bake | Notify",
        **_all(PROMOTED + ROLLING_BACK + DONE, IGNORED),
    },
    "down_done": {
        **_all(ROLLING_BACK + DONE, IGNORED),
        "rolling_back_down": "rolled_back | Notify,Notify",
    },
    "down_failed": {
        **_all(ROLLING_BACK + DONE, IGNORED),
        "rolling_back_down": "rolled_back | Notify,Notify",
    },
    "contract_applied": {**_all(PROMOTED, IGNORED), "promoted_running": "promoted:done | Notify"},
    "contract_failed": {**_all(PROMOTED, IGNORED), "promoted_running": "promoted:failed | Notify"},
    "contract_refused": {
        **_all(PROMOTED, IGNORED),
        "promoted_running": "promoted:refused | Notify",
    },
}


def test_table_covers_every_event() -> None:
    assert set(EXPECTED) == set(EVENTS)
    for event, outcomes in EXPECTED.items():
        assert set(outcomes) <= set(STATES), event


def test_every_event_type_is_exercised() -> None:
    exercised = {type(make(None)) for make, _ in EVENTS.values()}
    from bluegreen.controller.machine import ALLOWED

    assert exercised == set(ALLOWED)


CASES = [(state, event) for state in STATES for event in EVENTS]


def _snapshot(r: Rollout | None) -> str | None:
    return None if r is None else json.dumps(r.to_json(), sort_keys=True)


@pytest.mark.parametrize(("state", "event_name"), CASES, ids=[f"{s}-{e}" for s, e in CASES])
def test_transition(state: str, event_name: str) -> None:
    built = build(state)
    before = built.rollout
    make, delay = EVENTS[event_name]
    event = make(before)
    now = built.now + delay
    expected = EXPECTED[event_name].get(state, "ILLEGAL")
    snapshot = _snapshot(before)

    if expected == "ILLEGAL":
        with pytest.raises(IllegalTransitionError) as info:
            transition(before, event, now)
        phase = before.phase.value if before is not None else "idle"
        assert str(info.value).startswith(f'cannot {type(event).verb}: rollout phase is "{phase}"')
        assert "bluegreen" in str(info.value)  # every refusal says what to run next
        assert _snapshot(before) == snapshot
        return

    after, actions = transition(before, event, now)
    if expected == IGNORED:
        assert after is before
        assert actions == ()
        return

    where, _, kinds = expected.partition(" | ")
    assert describe(after) == where.strip()
    assert [type(a).__name__ for a in actions] == kinds.split(",")
    assert invariant_violation(after) is None
    assert Rollout.from_json(json.loads(json.dumps(after.to_json()))) == after
    assert _snapshot(before) == snapshot  # the old record is never modified
