"""The rollout record in the state document: next document, stale weights, commands, notices."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bluegreen.controller import records
from bluegreen.controller.conditions import Fact
from bluegreen.controller.executors import notification_for
from bluegreen.controller.machine import (
    Abort,
    MigrationsApplied,
    Notify,
    Phase,
    PreflightPassed,
    Promote,
    Rollout,
    SetWeights,
    SmokePassed,
    Start,
    Step,
    WeightsConfirmed,
    transition,
)
from bluegreen.routing import Colour
from bluegreen.state.model import HistoryKind, StateDocument, initial_document

NOW = 1_700_000_000.0
AT = datetime.fromtimestamp(NOW, UTC)


def doc_with(rollout: Rollout | None, green_bp: int = 0, version: int = 1) -> StateDocument:
    doc = initial_document(actor="t", now=AT, green_bp=green_bp)
    if rollout is not None:
        doc = records.next_document(doc, None, rollout, (), "t", AT)
    return doc


def started() -> tuple[Rollout, tuple[object, ...]]:
    start = Start("v2", steps=(Step(1000, 5), Step(10000, 1)), salt="s1", current_green_bp=0)
    return transition(None, start, NOW)


def ramping() -> Rollout:
    r, _ = started()
    r, _ = transition(r, PreflightPassed(), NOW)
    r, _ = transition(r, MigrationsApplied(), NOW)
    r, _ = transition(r, SmokePassed(), NOW)
    return r


def test_start_is_recorded_with_its_phase_and_extra_detail() -> None:
    new, actions = started()
    doc = initial_document(actor="t", now=AT)
    nxt = records.next_document(doc, None, new, actions, "admin", AT, extra_detail={"x": 1})
    assert nxt.rollout == new.to_json()
    entry = nxt.history[-1]
    assert entry.kind == HistoryKind.ROLLOUT_PHASE
    assert entry.detail["phase"] == "preflight"
    assert entry.detail["fact"] == "rollout_started"
    assert entry.detail["x"] == 1
    assert nxt.green_weight_bp == 0
    assert nxt.live is Colour.BLUE
    assert records.decode(nxt) == new


def test_first_set_weights_is_stored_in_the_same_document() -> None:
    r = ramping()
    assert r.phase is Phase.RAMP
    prev, _ = started()
    doc = doc_with(prev)
    nxt = records.next_document(doc, prev, r, (SetWeights(1000, "s1"),), "c", AT)
    assert nxt.green_weight_bp == 1000
    assert nxt.salt == "s1"
    kinds = [e.kind for e in nxt.history[-2:]]
    assert kinds == [HistoryKind.ROLLOUT_PHASE, HistoryKind.WEIGHTS_CHANGED]


def test_abort_stores_zero_percent_with_the_decision() -> None:
    r = ramping()
    r, _ = transition(r, WeightsConfirmed(1000), NOW + 1)
    doc = doc_with(r, green_bp=1000)
    aborted, actions = transition(r, Abort(), NOW + 2)
    assert isinstance(actions[0], SetWeights)
    nxt = records.next_document(doc, r, aborted, actions, "c", AT)
    assert nxt.green_weight_bp == 0
    stored = records.decode(nxt)
    assert stored is not None
    assert stored.phase is Phase.ROLLING_BACK


def test_promotion_makes_the_target_live() -> None:
    r = ramping()
    r, _ = transition(r, WeightsConfirmed(1000), NOW)
    r, _ = transition(r, Promote(), NOW)
    doc = doc_with(r, green_bp=10000)
    promoted, actions = transition(r, WeightsConfirmed(10000), NOW + 1)
    assert promoted.phase is Phase.PROMOTED
    nxt = records.next_document(doc, r, promoted, actions, "c", AT)
    assert nxt.live is Colour.GREEN
    assert nxt.green_weight_bp == 10000


def test_a_late_weight_request_is_refused_once_the_record_moved_on() -> None:
    r = ramping()
    doc = doc_with(r)
    assert records.weights_wanted(doc, r.id, 1000)
    assert not records.weights_wanted(doc, r.id, 5000)
    assert not records.weights_wanted(doc, r.id + 1, 1000)
    aborted, _ = transition(r, Abort(), NOW)
    assert not records.weights_wanted(doc_with(aborted), r.id, 1000)
    assert records.weights_wanted(doc_with(aborted), r.id, 0)
    assert not records.weights_wanted(doc_with(None), 1, 0)


@pytest.mark.parametrize(
    ("phase_of", "allowed"),
    [
        ("none", ["start"]),
        ("preflight", ["abort"]),
        ("ramp", ["pause", "promote", "abort"]),
    ],
)
def test_allowed_commands_follow_the_machine(phase_of: str, allowed: list[str]) -> None:
    rollout = {"none": None, "preflight": started()[0], "ramp": ramping()}[phase_of]
    doc = doc_with(rollout)
    assert records.allowed_commands(rollout, doc, NOW) == allowed


def test_start_is_not_allowed_while_weights_are_split() -> None:
    doc = initial_document(actor="t", now=AT, green_bp=3000)
    assert records.allowed_commands(None, doc, NOW) == []


def test_summary_and_view_say_where_the_rollout_is() -> None:
    assert "no rollout yet" in records.summary(None, NOW)
    r = ramping()
    r, _ = transition(r, WeightsConfirmed(1000), NOW)
    text = records.summary(r, NOW + 2)
    assert text == "rollout 1 of v2 (blue -> green): bake step 1/2 at 10 %, 3 s of bake left"
    view = records.rollout_view(doc_with(r, green_bp=1000), r, NOW + 2)
    assert view["phase"] == "bake"
    assert view["step"] == 1
    assert view["steps"] == 2
    assert view["bake_remaining_seconds"] == 3.0
    assert view["weights"] == {"green": 10.0, "blue": 90.0, "live": "blue"}


def test_notification_carries_the_fact_reason_and_weights() -> None:
    r = ramping()
    action = Notify(Fact.FALLBACK_STARTED, r.id, Phase.ROLLING_BACK, "fallback: boom", "error_rate")
    n = notification_for(action, r, 1000, NOW)
    assert (n.fact, n.rollout_id, n.phase, n.reason) == (
        "fallback_started",
        1,
        "rolling_back",
        "error_rate",
    )
    assert n.version == "v2"
    assert n.target == "green"
    assert n.weights == {"blue": 90.0, "green": 10.0}
    assert notification_for(action, None, 0, NOW).version is None
