"""Reasons, facts and messages of the rollout controller, in one file.

Like Argo Rollouts' ``utils/conditions/conditions.go``: the strings that end up
in the state store, the API, metric labels (``rollbacks_total{reason=...}``),
logs and webhooks are defined here and nowhere else.

* :class:`Reason` — why a rollout failed, was paused or a command was refused.
  Analysis failures use :class:`~bluegreen.health.analysis.VerdictReason`
  codes (``error_rate_above_baseline``...), defined next to the analysis
  because ``health`` must not import ``controller``; :data:`FailureCode`
  is the union and :func:`parse_failure_code` reads either back.
* :class:`Fact` — what happened (snake_case facts, the log and notification
  event names): ``rollout_started``, ``step_reached``, ``fallback_started``...
* ``*_MESSAGE`` templates — human text with ``str.format`` fields.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, TypeAlias

from bluegreen.health.analysis import VerdictReason


class Reason(StrEnum):
    """Why a rollout stopped, paused, or refused a command (besides analysis verdicts)."""

    PREFLIGHT_FAILED = "preflight_failed"
    MIGRATION_FAILED = "migration_failed"
    SMOKE_FAILED = "smoke_failed"
    OLD_COLOUR_SMOKE_FAILED = "old_colour_smoke_failed"
    WEIGHTS_NOT_CONFIRMED = "weights_not_confirmed"
    OPERATOR_ABORT = "operator_abort"
    OPERATOR_PAUSE = "operator_pause"
    ANALYSIS_INCONCLUSIVE = "analysis_inconclusive"
    DRAIN_TIMED_OUT = "drain_timed_out"
    DOWN_MIGRATIONS_FAILED = "down_migrations_failed"
    CONTRACT_FAILED = "contract_failed"
    CONTRACT_REFUSED_OLD_COLOUR_SERVING = "contract_refused_old_colour_serving"


FailureCode: TypeAlias = Reason | VerdictReason

# Analysis reasons the controller understands (re-exported so there is one place to look).
ANALYSIS_ERROR_RATE: Final = VerdictReason.ERROR_RATE
ANALYSIS_ERROR_RATE_VS_BASELINE: Final = VerdictReason.ERROR_RATE_VS_BASELINE
ANALYSIS_LATENCY: Final = VerdictReason.LATENCY
ANALYSIS_LATENCY_VS_BASELINE: Final = VerdictReason.LATENCY_VS_BASELINE
ANALYSIS_MEASUREMENT_ERROR: Final = VerdictReason.MEASUREMENT_ERROR
ANALYSIS_NOT_ENOUGH_DATA: Final = VerdictReason.NOT_ENOUGH_DATA
ANALYSIS_BASELINE_FAILING: Final = VerdictReason.BASELINE_FAILING
PROBE_FAILED: Final = VerdictReason.PROBE_FAILED


def parse_failure_code(text: str) -> FailureCode:
    """Read a stored reason code back; ``ValueError`` listing the known codes."""
    for enum in (Reason, VerdictReason):
        try:
            return enum(text)
        except ValueError:
            continue
    known = ", ".join(sorted({*Reason, *VerdictReason}))
    raise ValueError(f"unknown reason code {text!r}; known codes: {known}")


class Fact(StrEnum):
    """Something that happened to a rollout: the transition-log and notification event name."""

    ROLLOUT_STARTED = "rollout_started"
    PREFLIGHT_PASSED = "preflight_passed"
    MIGRATIONS_APPLIED = "migrations_applied"
    SMOKE_PASSED = "smoke_passed"
    WEIGHTS_REQUESTED = "weights_requested"
    STEP_REACHED = "step_reached"
    ROLLOUT_PAUSED = "rollout_paused"
    ROLLOUT_RESUMED = "rollout_resumed"
    PROMOTION_REQUESTED = "promotion_requested"
    ROLLOUT_PROMOTED = "rollout_promoted"
    FALLBACK_STARTED = "fallback_started"
    WEIGHTS_RETRIED = "weights_retried"
    FALLBACK_WEIGHTS_ZERO = "fallback_weights_zero"
    FALLBACK_DRAINED = "fallback_drained"
    DRAIN_TIMED_OUT = "drain_timed_out"
    DOWN_MIGRATIONS_STARTED = "down_migrations_started"
    DOWN_MIGRATIONS_DONE = "down_migrations_done"
    DOWN_MIGRATIONS_FAILED = "down_migrations_failed"
    ROLLOUT_ROLLED_BACK = "rollout_rolled_back"
    ROLLOUT_ABORTED = "rollout_aborted"
    OLD_COLOUR_DRAINED = "old_colour_drained"
    CONTRACT_DUE = "contract_due"
    CONTRACT_STARTED = "contract_started"
    CONTRACT_APPLIED = "contract_applied"
    CONTRACT_FAILED = "contract_failed"
    CONTRACT_REFUSED = "contract_refused"
    CONTROLLER_RESTARTED = "controller_restarted"


# --------------------------------------------------------------------------- messages
# Fields: {id} rollout number, {version}, {target}/{old} colours, {weight} "10 %",
# {step}/{steps} 1-based step numbers, {bake} / {left} / {timeout} durations.

STARTED_MESSAGE: Final = "rollout {id} of {version} started: {target} is the target, {old} is live"
PREFLIGHT_PASSED_MESSAGE: Final = "preflight passed ({passed}/{total} checks)"
PREFLIGHT_FAILED_MESSAGE: Final = "preflight failed: {failed}"
MIGRATIONS_APPLIED_MESSAGE: Final = "{count} migration(s) applied ({phases})"
MIGRATION_FAILED_MESSAGE: Final = "migrations failed: {detail}"
SMOKE_PASSED_MESSAGE: Final = "smoke tests passed ({total} checks)"
SMOKE_FAILED_MESSAGE: Final = "smoke tests failed on {target}: {failed}"
OLD_COLOUR_SMOKE_FAILED_MESSAGE: Final = (
    "smoke tests failed on {old}, the live colour, after the migrations: the old code does "
    "not work with the new schema ({failed}). Make the migration backward compatible"
)
WEIGHTS_REQUESTED_MESSAGE: Final = (
    "step {step}/{steps}: {target} -> {weight}, waiting for every replica to confirm"
)
STEP_REACHED_MESSAGE: Final = (
    "step {step}/{steps}: every replica sends {weight} to {target}; baking {bake}"
)
STEP_REACHED_PAUSED_MESSAGE: Final = (
    "step {step}/{steps}: every replica sends {weight} to {target}; paused, bake clock stopped"
)
WEIGHTS_NOT_CONFIRMED_MESSAGE: Final = (
    "not every live replica confirmed {target} at {weight} within {timeout}"
)
WEIGHTS_RETRIED_MESSAGE: Final = (
    "not every live replica confirmed {target} at {weight} within {timeout}; asking again"
)
PAUSED_MESSAGE: Final = "paused by operator at {weight} ({left} of bake left)"
INCONCLUSIVE_PAUSED_MESSAGE: Final = "paused: analysis inconclusive: {detail}"
RESUMED_MESSAGE: Final = "resumed at {weight}; {left} of bake left"
PROMOTION_REQUESTED_MESSAGE: Final = "promotion requested: {target} -> 100 %, skipping the bake"
PROMOTED_MESSAGE: Final = "rollout {id} promoted: {target} serves 100 % and is now live"
ABORT_MESSAGE: Final = "aborted by operator"
FALLBACK_MESSAGE: Final = "fallback: {detail}; sending all traffic to {old}"
NO_FALLBACK_NEEDED_MESSAGE: Final = "stopping: {detail}; {target} never received traffic"
FALLBACK_WEIGHTS_ZERO_MESSAGE: Final = (
    "every replica sends 0 % to {target}: {since_failing} after the first failing "
    "measurement, {since_detected} after the decision to fall back"
)
FALLBACK_DRAINED_MESSAGE: Final = "{target} drained: no requests in flight"
DRAIN_TIMED_OUT_MESSAGE: Final = (
    "{target} still had requests in flight after {timeout}; down-migrations skipped"
)
DOWN_MIGRATIONS_STARTED_MESSAGE: Final = (
    "reverting {count} migration(s) of this rollout: {versions}"
)
DOWN_MIGRATIONS_KEPT_MESSAGE: Final = (
    "migration {version} is irreversible; it and the ones before it stay applied"
)
DOWN_MIGRATIONS_DONE_MESSAGE: Final = "{count} migration(s) reverted"
DOWN_MIGRATIONS_FAILED_MESSAGE: Final = (
    "down-migrations failed after reverting {count}: {detail}. Traffic is on {old}; "
    "check the schema with `bluegreen migrate status`"
)
ROLLED_BACK_MESSAGE: Final = "rollout {id} rolled back: {reason}"
ABORTED_MESSAGE: Final = "rollout {id} aborted: {reason}"
OLD_COLOUR_DRAINED_MESSAGE: Final = "{old} drained; contract is due in {grace}"
CONTRACT_DUE_MESSAGE: Final = (
    "contract migrations of {version} are due: run `bluegreen rollout contract`"
)
CONTRACT_STARTED_MESSAGE: Final = "running contract migrations of {version}"
CONTRACT_APPLIED_MESSAGE: Final = "{count} contract migration(s) applied"
CONTRACT_FAILED_MESSAGE: Final = (
    "contract migrations failed: {detail}. Fix the cause and run `bluegreen rollout contract`"
)
CONTRACT_REFUSED_MESSAGE: Final = (
    "contract refused: {detail}. It runs once {old} serves no traffic and has drained"
)
RESTARTED_MESSAGE: Final = "controller restarted; resuming in {phase}{detail}"

# Illegal-transition details: what is allowed instead, and where to look.
ALLOWED_FROM_MESSAGE: Final = "{what} is allowed from {phases}. See `bluegreen rollout status`"
NO_ROLLOUT_MESSAGE: Final = "no rollout has been started. Start one with `bluegreen rollout start`"
ALREADY_PAUSED_MESSAGE: Final = (
    "the rollout is already paused ({why}). Resume it with `bluegreen rollout resume`"
)
NOT_PAUSED_MESSAGE: Final = "the rollout is not paused. See `bluegreen rollout status`"
PROMOTING_MESSAGE: Final = (
    "promotion to 100 % is in progress; it finishes when every replica confirms. "
    "See `bluegreen rollout status`"
)
ALREADY_ROLLING_BACK_MESSAGE: Final = (
    "the rollout is already rolling back ({why}). See `bluegreen rollout status`"
)
CONTRACT_RUNNING_MESSAGE: Final = (
    "contract migrations of rollout {id} are running; wait for them to finish. "
    "See `bluegreen rollout status`"
)
CONTRACT_DONE_MESSAGE: Final = (
    "contract migrations of rollout {id} are already applied. See `bluegreen rollout status`"
)
CONTRACT_SERVING_MESSAGE: Final = (
    "{old}, the old colour, still has requests in flight; contract is refused until it "
    "drains (then the grace period of {grace} starts). See `bluegreen rollout status`"
)
CONTRACT_GRACE_MESSAGE: Final = (
    "the grace period after the old colour drained ends in {left}; wait, or run "
    "`bluegreen rollout contract --skip-grace` to contract now"
)
WEIGHTS_SPLIT_MESSAGE: Final = (
    "weights are split (green {weight}) outside a rollout, so neither colour is live. "
    "Set them to 0 % or 100 % with `bluegreen weights set` first"
)


def human_seconds(seconds: float) -> str:
    """A duration for people: ``40 ms``, ``2.5 s``, ``2 min 5 s``, ``3 h 20 min``, ``1 d 2 h``."""
    s = max(0.0, seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 10:
        return f"{s:.1f} s".replace(".0 s", " s")
    whole = round(s)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def percent(bp: int) -> str:
    """Basis points as a percentage for people: ``1000`` -> ``10 %``, ``1050`` -> ``10.5 %``."""
    return f"{bp / 100:g} %"
