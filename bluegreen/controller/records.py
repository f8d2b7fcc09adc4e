"""The rollout record in the state document: reading, writing, describing. Pure.

No I/O, clock or randomness. The state document keeps the record as an
opaque JSON object (``doc.rollout``); :class:`~bluegreen.controller.machine.Rollout`
owns its schema. This module is the one place that turns a transition into
the next document (:func:`next_document`): the record, the history entry that
names the phase change, and — in the *same* compare-and-set — the weights
when the transition's first action is ``SetWeights`` (a fallback's 0 % is
stored together with the decision to fall back, so no replica can see one
without the other) and the live colour once a rollout is promoted.

It also answers what operators ask: which commands the rollout takes now
(:func:`allowed_commands`, found by trying each one on the pure machine, so
guards are honoured too) and a one-line :func:`summary`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from bluegreen.controller import conditions as c
from bluegreen.controller.machine import (
    Abort,
    Actions,
    ContractRequested,
    ContractState,
    Event,
    Pause,
    Phase,
    Promote,
    Resume,
    Rollout,
    SetWeights,
    Start,
    transition,
)
from bluegreen.errors import IllegalTransitionError, RolloutRecordError
from bluegreen.routing import BASIS_POINTS, Colour
from bluegreen.state.model import HistoryKind, StateDocument, with_rollout, with_weights

# Operator commands by the name the API and CLI use.
COMMANDS: Final = ("start", "pause", "resume", "promote", "abort", "contract")


def decode(doc: StateDocument) -> Rollout | None:
    """The rollout record of ``doc`` (None when none was ever started).

    Raises :class:`~bluegreen.errors.RolloutRecordError` for a corrupt record.
    """
    return None if doc.rollout is None else Rollout.from_json(dict(doc.rollout))


def _history_detail(new: Rollout, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "rollout_id": new.id,
        "version": new.version,
        "phase": new.phase.value,
        "step": new.step_index + 1,
        "steps": len(new.steps),
        "target": new.target.value,
        "target_percent": new.target_bp / 100,
    }
    if new.log:
        detail["fact"] = new.log[-1].fact.value
        detail["message"] = new.log[-1].message
    if extra:
        detail.update(extra)
    return detail


def next_document(
    doc: StateDocument,
    old: Rollout | None,
    new: Rollout,
    actions: Actions,
    actor: str,
    now: datetime,
    *,
    extra_detail: Mapping[str, Any] | None = None,
) -> StateDocument:
    """The document to compare-and-set after ``old`` became ``new`` with ``actions``.

    ``extra_detail`` is added to the history entry (e.g. a start's attestations).
    """
    changed_phase = old is None or old.phase is not new.phase or old.id != new.id
    kind = HistoryKind.ROLLOUT_PHASE if changed_phase else HistoryKind.ROLLOUT_UPDATED
    result = with_rollout(
        doc,
        new.to_json(),
        actor,
        now,
        kind=kind,
        detail=_history_detail(new, extra_detail),
    )
    weights = next((a for a in actions if isinstance(a, SetWeights)), None)
    live: Colour | None = None
    if new.phase is Phase.PROMOTED:
        live = new.target
    elif old is None or old.id != new.id:
        live = new.from_colour
    if weights is not None or (live is not None and live is not result.live):
        green_bp = weights.green_bp if weights is not None else result.green_weight_bp
        salt = weights.salt if weights is not None and weights.salt else None
        reason = f"rollout {new.id} of {new.version}: {new.phase.value}"
        result = with_weights(result, green_bp, actor, now, salt=salt, live=live, reason=reason)
    return result


def weights_wanted(doc: StateDocument, rollout_id: int, green_bp: int) -> bool:
    """Whether the record in ``doc`` still asks for green at ``green_bp``.

    A ``SetWeights`` performed late (a restart, a slow store) must not undo a
    decision taken since, such as an operator's abort sending the target to 0 %.
    """
    try:
        record = decode(doc)
    except RolloutRecordError:
        return False
    return (
        record is not None
        and record.id == rollout_id
        and record.green_bp(record.target_bp) == green_bp
    )


# --------------------------------------------------------------------------- commands


def command_event(name: str, doc: StateDocument) -> Event:
    """A representative event for ``name``, to ask the machine whether it is allowed."""
    match name:
        case "start":
            return Start("probe", current_green_bp=doc.green_weight_bp)
        case "pause":
            return Pause()
        case "resume":
            return Resume()
        case "promote":
            return Promote()
        case "abort":
            return Abort()
        case "contract":
            return ContractRequested(skip_grace=True)
    raise ValueError(f"unknown rollout command {name!r}; known: {', '.join(COMMANDS)}")


def allowed_commands(rollout: Rollout | None, doc: StateDocument, now: float) -> list[str]:
    """The operator commands the machine would accept now (guards included).

    ``contract`` is listed when it runs at least with ``--now`` (skipping the grace).
    """
    allowed = []
    for name in COMMANDS:
        try:
            transition(rollout, command_event(name, doc), now)
        except (IllegalTransitionError, ValueError):
            continue
        allowed.append(name)
    return allowed


# --------------------------------------------------------------------------- describing


def _percent(bp: int) -> str:
    return c.percent(bp)


def summary(rollout: Rollout | None, now: float) -> str:
    """One line for people: where the rollout is and what it waits for."""
    if rollout is None:
        return "no rollout yet; start one with `bluegreen rollout start VERSION`"
    r = rollout
    head = f"rollout {r.id} of {r.version} ({r.from_colour} -> {r.target})"
    step = f"step {r.step_index + 1}/{len(r.steps)}"
    match r.phase:
        case Phase.PREFLIGHT | Phase.MIGRATING | Phase.SMOKE:
            text = f"{head}: {r.phase.value}"
        case Phase.RAMP:
            what = "promoting to 100 %" if r.promoting else f"{step}, {_percent(r.target_bp)}"
            text = f"{head}: ramp {what}, waiting for every replica to confirm"
        case Phase.BAKE:
            left = c.human_seconds(r.bake_remaining_at(now))
            text = f"{head}: bake {step} at {_percent(r.target_bp)}, {left} of bake left"
        case Phase.PROMOTED:
            text = f"{head}: promoted; {r.target} is live (contract {r.contract.value})"
            if r.contract is ContractState.WAITING_GRACE and r.contract_due_at is not None:
                text += f", due in {c.human_seconds(r.contract_due_at - now)}"
        case Phase.ROLLING_BACK:
            why = r.failure.message if r.failure else "?"
            step_name = r.rollback_step.value if r.rollback_step else "?"
            text = f"{head}: rolling back ({step_name}): {why}"
        case Phase.ROLLED_BACK | Phase.ABORTED:
            why = r.failure.message if r.failure else "?"
            text = f"{head}: {r.phase.value}: {why}"
        case Phase.IDLE:  # pragma: no cover  # never stored
            text = head
    if r.hold is not None:
        text += f" [paused: {r.hold.message}]"
    return text


def rollout_view(doc: StateDocument, rollout: Rollout | None, now: float) -> dict[str, Any]:
    """What ``GET /api/v1/rollout`` answers (leader and analysis are added by the runner)."""
    phase = rollout.phase.value if rollout is not None else Phase.IDLE.value
    view: dict[str, Any] = {
        "state_version": doc.version,
        "phase": phase,
        "summary": summary(rollout, now),
        "allowed": allowed_commands(rollout, doc, now),
        "weights": {
            "green": doc.green_weight_bp / 100,
            "blue": (BASIS_POINTS - doc.green_weight_bp) / 100,
            "live": doc.live.value,
        },
        "rollout": None if doc.rollout is None else dict(doc.rollout),
    }
    if rollout is not None:
        view["id"] = rollout.id
        view["version"] = rollout.version
        view["target"] = rollout.target.value
        view["step"] = rollout.step_index + 1
        view["steps"] = len(rollout.steps)
        view["paused"] = rollout.paused
        view["bake_remaining_seconds"] = (
            round(rollout.bake_remaining_at(now), 3) if rollout.phase is Phase.BAKE else None
        )
        fb = rollout.fallback
        view["detection_seconds"] = round(fb.detection_seconds, 3) if fb is not None else None
        view["fallback_seconds"] = (
            round(fb.fallback_seconds, 3)
            if fb is not None and fb.fallback_seconds is not None
            else None
        )
        view["reason"] = rollout.failure.code if rollout.failure is not None else None
    return view
