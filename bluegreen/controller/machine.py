"""The rollout controller's state machine. Pure: no I/O, no clock, no randomness.

Rule 1: everything that decides what a rollout does next lives in this file.
The runner (``controller/runner.py``) only turns I/O results into events and
actions into I/O; it never looks at a phase to decide anything.

Theory of operation
-------------------
A rollout is one :class:`Rollout` record (frozen, JSON-serialisable). It moves
by one function::

    new_rollout, actions = transition(rollout, event, now)

``event`` is something that happened (an operator command, an I/O result, a
timer); ``now`` is the wall-clock time in seconds, passed in. ``actions`` are
data telling the runner what to do next. The runner's loop is therefore:
*persist ``new_rollout`` with compare-and-set, then perform ``actions``*; each
action eventually produces another event. Because the record is written
before anything it asks for happens, a controller killed at any point can
call :func:`resume` with the stored record and redo the current step
(idempotent actions), and never does anything a record does not say.

The happy path::

    idle ─Start─► preflight ─PreflightPassed─► migrating ─MigrationsApplied─►
    smoke ─SmokePassed─► ramp(step 0) ─WeightsConfirmed─► bake(step 0) ─Tick─►
    ramp(step 1) ─► bake(step 1) ─► … ─► bake(last, 100 %) ─Tick─► promoted

* **ramp(i)**: the target colour's weight for step i has been requested
  (``SetWeights``); the step counts as reached only when *every live
  replica* confirmed it (``WeightsConfirmed``), within
  ``confirm_timeout_seconds``, else the rollout fails.
* **bake(i)**: the step's bake timer runs while analysis watches. The clock
  is wall time: ``bake_started_at`` plus ``bake_elapsed`` (time baked before
  the last pause). Pause freezes it; resume and restarts continue with the
  time left.
* Steps only go up. The last step is always 100 % (added if missing).
  ``Promote`` jumps to the last step and skips its bake; it still waits for
  every replica to confirm 100 %.

The failure path, from any of preflight, migrating, smoke, ramp, bake::

    ─(check failed)─► rolling_back ─► … ─► rolled_back
    ─Abort──────────► rolling_back ─► … ─► aborted

rolling_back runs these steps in order, skipping the ones not needed:

1. ``weights``: send 0 % to the target (all traffic to the old colour) —
   the first action, milliseconds — and wait for every replica to confirm;
   the time from the first failing measurement to that confirmation is
   recorded (:class:`Fallback`). Skipped if the target never got traffic.
2. ``drain``: a weight decrease is done only when the target's in-flight
   requests have finished (``Drained``), or after ``drain_timeout_seconds``
   (then down-migrations are skipped: requests may still use the schema).
3. ``migrations``: if migrations were running when the failure came, they
   were asked to stop at a safe point (``CancelMigrations``); wait for what
   they applied.
4. ``down_migrations``: only if ``down_migrations_on_rollback`` is set, and
   only this rollout's reversible migrations, newest first, stopping at the
   first irreversible one. The expand phase is backward compatible by
   construction, so leaving it applied is the default.

After promotion, the target is the live colour and the next rollout targets
the other one (weights are always expressed as green's share, so that ramp
is green going down). The contract phase of a promoted rollout is a
sub-state (:class:`ContractState`): ``draining`` (the old colour still has
requests in flight: contract refused) → ``waiting_grace`` → ``due`` → (by
``ContractRequested`` or automatically with ``auto_contract``) ``running`` →
``done`` | ``failed`` | ``refused``.

Events that are answers to an action the rollout no longer waits for (a
weight confirmation for a superseded weight, a smoke result after an abort)
are *stale*: ignored, the same record is returned and no action. Every other
(phase, event) pair not in :data:`ALLOWED` raises
:class:`~bluegreen.errors.IllegalTransitionError` saying what is allowed, and
leaves the record untouched (records are immutable, so this is free).

The runner keeps a single timer: each ``ScheduleTick(at)`` replaces the
previous one. An early or spurious ``Tick`` re-arms the timer; a late one
does whatever became due.

For the runner
--------------
::

    on becoming leader:           rollout, actions = resume(load(), clock())
    on every event (one at a time, under the leader lock):
        new, actions = transition(rollout, event, clock())   # may raise Illegal...
        if new is not rollout:
            store.compare_and_set(version, new.to_json())    # persist FIRST
        rollout = new
        for action in actions: start(action)                 # in this order
    each started action ends by feeding its result back as an event:
        SetWeights -> WeightsConfirmed   RunSmoke -> SmokePassed | SmokeFailed
        ScheduleTick -> Tick             WaitDrained -> Drained   ...

Operator commands are events too: the admin API calls ``transition`` and
answers 409 with the :class:`IllegalTransitionError` message. When the
rollout id changes (a new Start), the runner cancels tasks of the old one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar, Final, TypeAlias, TypeVar, assert_never

from bluegreen.controller import conditions as c
from bluegreen.controller.conditions import Fact, FailureCode, Reason
from bluegreen.errors import IllegalTransitionError, RolloutRecordError
from bluegreen.health.analysis import VerdictReason
from bluegreen.routing import BASIS_POINTS, Colour

SCHEMA_VERSION: Final = 1
MAX_LOG_ENTRIES: Final = 200
_EPSILON: Final = 1e-6  # seconds; absorbs float rounding in bake arithmetic


# =========================================================================== states


class Phase(StrEnum):
    """Where a rollout is. The same strings appear in the state store, API, metrics and logs."""

    IDLE = "idle"
    PREFLIGHT = "preflight"
    MIGRATING = "migrating"
    SMOKE = "smoke"
    RAMP = "ramp"
    BAKE = "bake"
    PROMOTED = "promoted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


ACTIVE_PHASES: Final = frozenset(
    {Phase.PREFLIGHT, Phase.MIGRATING, Phase.SMOKE, Phase.RAMP, Phase.BAKE}
)
FINISHED_PHASES: Final = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED})


class ContractState(StrEnum):
    """Progress of the contract migrations of a promoted rollout."""

    NOT_DUE = "not_due"  # the rollout is not promoted
    DRAINING = "draining"  # promoted; the old colour still has requests in flight
    WAITING_GRACE = "waiting_grace"  # drained; the grace period runs
    DUE = "due"  # grace over; waiting for `bluegreen rollout contract`
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REFUSED = "refused"  # the runner found the old colour serving again


class RollbackStep(StrEnum):
    """The step a rolling_back rollout waits on, in the order they run."""

    WEIGHTS = "weights"
    DRAIN = "drain"
    MIGRATIONS = "migrations"
    DOWN_MIGRATIONS = "down_migrations"


_ROLLBACK_ORDER: Final = tuple(RollbackStep)


# =========================================================================== values


def _finite(name: str, value: object, *, minimum: float = 0.0) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Step:
    """One ramp step: the target colour's weight (basis points) and how long to bake it."""

    weight_bp: int
    bake_seconds: float

    def __post_init__(self) -> None:
        w = self.weight_bp
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= BASIS_POINTS:
            raise ValueError(
                f"step weight must be 1..{BASIS_POINTS} basis points (0.01 %..100 %), got {w!r}"
            )
        _finite("step bake_seconds", self.bake_seconds)


DEFAULT_STEPS: Final = (Step(1000, 60.0), Step(5000, 60.0), Step(BASIS_POINTS, 60.0))
MAX_STEPS: Final = 100


def normalize_steps(steps: Iterable[Step]) -> tuple[Step, ...]:
    """Check that weights strictly increase; append a 100 % step (no bake) if missing.

    Raises ``ValueError`` saying which step is wrong.
    """
    result = tuple(steps)
    if not result:
        raise ValueError("a rollout needs at least one step, e.g. 10 %, 50 %, 100 %")
    for i, (a, b) in enumerate(itertools.pairwise(result), start=2):
        if b.weight_bp <= a.weight_bp:
            raise ValueError(
                f"step {i} ({c.percent(b.weight_bp)}) must be above step {i - 1} "
                f"({c.percent(a.weight_bp)}): weights only go up during a rollout"
            )
    if result[-1].weight_bp != BASIS_POINTS:
        result = (*result, Step(BASIS_POINTS, 0.0))
    if len(result) > MAX_STEPS:
        raise ValueError(f"a rollout has at most {MAX_STEPS} steps, got {len(result)}")
    return result


@dataclass(frozen=True, slots=True)
class RolloutOptions:
    """Per-rollout settings (from the config's rollout section, overridable at start)."""

    confirm_timeout_seconds: float = 30.0
    drain_timeout_seconds: float = 120.0
    down_migrations_on_rollback: bool = False
    check_old_colour: bool = True  # re-run the live colour's smoke tests after the migrations
    contract_grace_seconds: float = 86_400.0
    auto_contract: bool = False

    def __post_init__(self) -> None:
        _finite("confirm_timeout_seconds", self.confirm_timeout_seconds, minimum=0.001)
        _finite("drain_timeout_seconds", self.drain_timeout_seconds, minimum=0.001)
        _finite("contract_grace_seconds", self.contract_grace_seconds)


@dataclass(frozen=True, slots=True)
class CheckItem:
    """One preflight checklist item, ✓ or ✗ with the reason."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A migration this rollout applied (or reverted)."""

    version: str
    name: str
    phase: str  # expand | migrate | contract
    duration_seconds: float
    reversible: bool


@dataclass(frozen=True, slots=True)
class SmokeResult:
    """One smoke check against one colour."""

    colour: Colour
    name: str
    ok: bool
    detail: str = ""
    duration_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Hold:
    """Why and since when a rollout is paused."""

    code: Reason
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a rollout is rolling back: the reason code, a message with numbers, where and when."""

    code: FailureCode
    message: str
    phase: Phase
    at: float
    by_operator: bool = False


@dataclass(frozen=True, slots=True)
class Fallback:
    """Timing of a traffic fallback (only when the target had received traffic)."""

    failing_since: float  # first failing measurement (or the abort)
    detected_at: float  # when the rollout was failed
    weights_zero_at: float | None = None  # every replica sent 0 % to the target
    drained_at: float | None = None
    drain_timed_out: bool = False

    @property
    def detection_seconds(self) -> float:
        """From the first failing measurement to the decision to fall back."""
        return self.detected_at - self.failing_since

    @property
    def fallback_seconds(self) -> float | None:
        """From the first failing measurement to 0 % confirmed by every replica."""
        if self.weights_zero_at is None:
            return None
        return self.weights_zero_at - self.failing_since


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of a rollout's transition log."""

    at: float
    fact: Fact
    from_phase: Phase
    to_phase: Phase
    message: str


@dataclass(frozen=True, slots=True)
class Results:
    """What the rollout's checks and migrations produced."""

    preflight: tuple[CheckItem, ...] = ()
    migrations: tuple[AppliedMigration, ...] = ()  # in the order applied
    smoke: tuple[SmokeResult, ...] = ()
    down_migrations: tuple[AppliedMigration, ...] = ()
    contract: tuple[AppliedMigration, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rollout:
    """Everything needed to resume a rollout deterministically after a crash.

    Weights here are the *target* colour's share in basis points; use
    :meth:`green_bp` for the value the proxy takes.
    """

    id: int
    version: str
    target: Colour
    salt: str
    steps: tuple[Step, ...]
    options: RolloutOptions
    started_at: float
    phase: Phase
    step_index: int = 0
    target_bp: int = 0  # weight requested for the target now
    confirmed_bp: int = 0  # weight every live replica confirmed
    peak_bp: int = 0  # highest weight ever requested: did the target get traffic?
    deadline: float | None = None  # confirm or drain deadline of the current wait
    promoting: bool = False
    hold: Hold | None = None
    bake_started_at: float | None = None  # None unless the bake clock runs
    bake_elapsed: float = 0.0  # seconds baked before bake_started_at
    analysis_running: bool = False
    migrations_in_flight: bool = False
    rollback_step: RollbackStep | None = None
    failure: Failure | None = None
    fallback: Fallback | None = None
    contract: ContractState = ContractState.NOT_DUE
    contract_due_at: float | None = None
    finished_at: float | None = None
    results: Results = field(default_factory=Results)
    log: tuple[LogEntry, ...] = ()

    # ----------------------------------------------------------------- derived

    @property
    def from_colour(self) -> Colour:
        """The colour that was live when the rollout started."""
        return self.target.other

    @property
    def live_colour(self) -> Colour:
        """The colour that owns the traffic: the target once promoted."""
        return self.target if self.phase is Phase.PROMOTED else self.from_colour

    @property
    def paused(self) -> bool:
        """True while an operator or inconclusive analysis holds the rollout."""
        return self.hold is not None

    @property
    def current_step(self) -> Step:
        """The step the rollout is at (meaningful in ramp and bake)."""
        return self.steps[self.step_index]

    @property
    def outcome(self) -> Phase | None:
        """The final phase (promoted, rolled_back, aborted) or None while in progress."""
        return self.phase if self.phase in FINISHED_PHASES else None

    def green_bp(self, target_bp: int) -> int:
        """Green's weight when the target has ``target_bp``."""
        return target_bp if self.target is Colour.GREEN else BASIS_POINTS - target_bp

    def bake_elapsed_at(self, now: float) -> float:
        """Seconds of the current step's bake done at ``now``."""
        if self.bake_started_at is None:
            return self.bake_elapsed
        return self.bake_elapsed + max(0.0, now - self.bake_started_at)

    def bake_remaining_at(self, now: float) -> float:
        """Seconds of bake left at ``now`` (0 when done)."""
        return max(0.0, self.current_step.bake_seconds - self.bake_elapsed_at(now))

    @property
    def bake_due_at(self) -> float | None:
        """When the bake completes, if its clock runs."""
        if self.phase is not Phase.BAKE or self.bake_started_at is None:
            return None
        return self.bake_started_at + max(0.0, self.current_step.bake_seconds - self.bake_elapsed)

    @property
    def next_due(self) -> float | None:
        """When the next Tick is needed (the single timer the runner keeps)."""
        if self.phase is Phase.BAKE:
            return self.bake_due_at
        if self.phase in (Phase.RAMP, Phase.ROLLING_BACK):
            return self.deadline
        if self.phase is Phase.PROMOTED and self.contract is ContractState.WAITING_GRACE:
            return self.contract_due_at
        return None

    # ----------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible object; the state store keeps it as is."""
        data = _plain(asdict(self))
        assert isinstance(data, dict)  # noqa: S101  # asdict of a dataclass is a dict
        data["schema"] = SCHEMA_VERSION
        data["from"] = self.from_colour.value
        return data

    @classmethod
    def from_json(cls, data: object) -> Rollout:
        """Read a stored record; :class:`RolloutRecordError` says what is wrong."""
        return _decode_rollout(data)


def _plain(value: object) -> object:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# =========================================================================== events


@dataclass(frozen=True, slots=True)
class Start:
    """Operator: start a rollout of ``version``.

    ``current_green_bp`` is green's weight in the state store right now: it
    decides which colour is live (0 -> blue, 10000 -> green; a split refuses
    to start). Without it the live colour follows from the previous rollout.
    ``salt`` is the new sticky-routing salt (the runner draws it).
    """

    verb: ClassVar[str] = "start a rollout"
    noun: ClassVar[str] = "starting a rollout"

    version: str
    steps: tuple[Step, ...] = DEFAULT_STEPS
    options: RolloutOptions = RolloutOptions()
    salt: str = ""
    current_green_bp: int | None = None

    def __post_init__(self) -> None:
        v = self.version
        if not isinstance(v, str) or not v.strip() or len(v) > 200 or not v.isprintable():
            raise ValueError(f"version label must be 1..200 printable characters, got {v!r}")
        object.__setattr__(self, "steps", normalize_steps(self.steps))
        g = self.current_green_bp
        if g is not None and (isinstance(g, bool) or not 0 <= g <= BASIS_POINTS):
            raise ValueError(f"current_green_bp must be 0..{BASIS_POINTS}, got {g!r}")


@dataclass(frozen=True, slots=True)
class Pause:
    """Operator: hold the rollout at its current weight (the bake clock stops)."""

    verb: ClassVar[str] = "pause"
    noun: ClassVar[str] = "pause"
    message: str = ""


@dataclass(frozen=True, slots=True)
class Resume:
    """Operator: continue a paused rollout with the bake time left."""

    verb: ClassVar[str] = "resume"
    noun: ClassVar[str] = "resume"


@dataclass(frozen=True, slots=True)
class Promote:
    """Operator: skip the remaining steps and bakes, go to 100 % now."""

    verb: ClassVar[str] = "promote"
    noun: ClassVar[str] = "promote"


@dataclass(frozen=True, slots=True)
class Abort:
    """Operator: fall back to the old colour; the rollout ends ``aborted``."""

    verb: ClassVar[str] = "abort"
    noun: ClassVar[str] = "abort"
    message: str = ""


@dataclass(frozen=True, slots=True)
class ContractRequested:
    """Operator (or CI): run the contract migrations of a promoted rollout."""

    verb: ClassVar[str] = "contract"
    noun: ClassVar[str] = "contract"
    skip_grace: bool = False


@dataclass(frozen=True, slots=True)
class Restarted:
    """The controller (re)started with this record: redo the current step."""

    verb: ClassVar[str] = "resume after a restart"
    noun: ClassVar[str] = "resuming after a restart"


@dataclass(frozen=True, slots=True)
class PreflightPassed:
    """RunPreflight: every required checklist item passed."""

    verb: ClassVar[str] = "record preflight results"
    noun: ClassVar[str] = "a preflight result"
    items: tuple[CheckItem, ...] = ()


@dataclass(frozen=True, slots=True)
class PreflightFailed:
    """RunPreflight: a required checklist item failed."""

    verb: ClassVar[str] = "record preflight results"
    noun: ClassVar[str] = "a preflight result"
    items: tuple[CheckItem, ...] = ()


@dataclass(frozen=True, slots=True)
class MigrationsApplied:
    """RunMigrations finished: every migration this rollout applied, including earlier attempts'."""

    verb: ClassVar[str] = "record applied migrations"
    noun: ClassVar[str] = "a migrations result"
    applied: tuple[AppliedMigration, ...] = ()


@dataclass(frozen=True, slots=True)
class MigrationFailed:
    """RunMigrations failed; ``applied`` are the ones that succeeded before."""

    verb: ClassVar[str] = "record a migration failure"
    noun: ClassVar[str] = "a migrations result"
    message: str = ""
    applied: tuple[AppliedMigration, ...] = ()


@dataclass(frozen=True, slots=True)
class MigrationsCancelled:
    """CancelMigrations: migrations stopped at a safe point; ``applied`` were applied."""

    verb: ClassVar[str] = "record cancelled migrations"
    noun: ClassVar[str] = "a migrations result"
    applied: tuple[AppliedMigration, ...] = ()


@dataclass(frozen=True, slots=True)
class SmokePassed:
    """RunSmoke: every smoke check passed."""

    verb: ClassVar[str] = "record smoke results"
    noun: ClassVar[str] = "a smoke result"
    results: tuple[SmokeResult, ...] = ()


@dataclass(frozen=True, slots=True)
class SmokeFailed:
    """RunSmoke: at least one smoke check failed."""

    verb: ClassVar[str] = "record smoke results"
    noun: ClassVar[str] = "a smoke result"
    results: tuple[SmokeResult, ...] = ()


@dataclass(frozen=True, slots=True)
class WeightsConfirmed:
    """SetWeights: every live replica applied green at ``green_bp``."""

    verb: ClassVar[str] = "record a weight confirmation"
    noun: ClassVar[str] = "a weight confirmation"
    green_bp: int


@dataclass(frozen=True, slots=True)
class Drained:
    """WaitDrained: ``colour`` has no request in flight on any live replica."""

    verb: ClassVar[str] = "record a drained colour"
    noun: ClassVar[str] = "a drain result"
    colour: Colour


@dataclass(frozen=True, slots=True)
class Tick:
    """ScheduleTick fired: time passed (the time is transition's ``now``)."""

    verb: ClassVar[str] = "tick"
    noun: ClassVar[str] = "a timer tick"


@dataclass(frozen=True, slots=True)
class AnalysisFailed:
    """Analysis decided the target is failing (after its failure limits)."""

    verb: ClassVar[str] = "record an analysis failure"
    noun: ClassVar[str] = "an analysis result"
    reason: VerdictReason
    message: str
    failing_since: float | None = None


@dataclass(frozen=True, slots=True)
class AnalysisInconclusive:
    """Analysis could not judge the target for too long: hold for an operator."""

    verb: ClassVar[str] = "record an inconclusive analysis"
    noun: ClassVar[str] = "an analysis result"
    reason: VerdictReason
    message: str


@dataclass(frozen=True, slots=True)
class DownMigrationsDone:
    """RunDownMigrations reverted ``reverted``."""

    verb: ClassVar[str] = "record down-migrations"
    noun: ClassVar[str] = "a down-migrations result"
    reverted: tuple[AppliedMigration, ...] = ()


@dataclass(frozen=True, slots=True)
class DownMigrationsFailed:
    """RunDownMigrations failed after reverting ``reverted``."""

    verb: ClassVar[str] = "record down-migrations"
    noun: ClassVar[str] = "a down-migrations result"
    message: str = ""
    reverted: tuple[AppliedMigration, ...] = ()


@dataclass(frozen=True, slots=True)
class ContractApplied:
    """RunContract applied ``applied``."""

    verb: ClassVar[str] = "record contract migrations"
    noun: ClassVar[str] = "a contract result"
    applied: tuple[AppliedMigration, ...] = ()


@dataclass(frozen=True, slots=True)
class ContractFailed:
    """RunContract failed after applying ``applied``."""

    verb: ClassVar[str] = "record contract migrations"
    noun: ClassVar[str] = "a contract result"
    message: str = ""
    applied: tuple[AppliedMigration, ...] = ()


@dataclass(frozen=True, slots=True)
class ContractRefused:
    """RunContract refused: the old colour had traffic or requests in flight."""

    verb: ClassVar[str] = "record a contract refusal"
    noun: ClassVar[str] = "a contract result"
    message: str = ""


Event: TypeAlias = (
    Start
    | Pause
    | Resume
    | Promote
    | Abort
    | ContractRequested
    | Restarted
    | PreflightPassed
    | PreflightFailed
    | MigrationsApplied
    | MigrationFailed
    | MigrationsCancelled
    | SmokePassed
    | SmokeFailed
    | WeightsConfirmed
    | Drained
    | Tick
    | AnalysisFailed
    | AnalysisInconclusive
    | DownMigrationsDone
    | DownMigrationsFailed
    | ContractApplied
    | ContractFailed
    | ContractRefused
)

OPERATOR_EVENTS: Final = (Start, Pause, Resume, Promote, Abort, ContractRequested)


# =========================================================================== actions


@dataclass(frozen=True, slots=True)
class SetWeights:
    """Write green's weight (and the rollout's routing salt) to the state store.

    With ``wait_confirm`` report ``WeightsConfirmed(green_bp)`` once every live
    replica applied it.
    """

    green_bp: int
    salt: str
    wait_confirm: bool = True


@dataclass(frozen=True, slots=True)
class RunPreflight:
    """Run the preflight checklist; report PreflightPassed or PreflightFailed."""

    version: str
    target: Colour


@dataclass(frozen=True, slots=True)
class RunMigrations:
    """Lint, then apply the pending migrations of these phases (idempotent).

    Report MigrationsApplied with every migration applied for this rollout
    (including by an attempt before a restart), or MigrationFailed.
    """

    version: str
    phases: tuple[str, ...] = ("expand", "migrate")


@dataclass(frozen=True, slots=True)
class CancelMigrations:
    """Stop running migrations at a safe point (between statements or batches).

    Report MigrationsCancelled with what this rollout applied — also when
    nothing was running (e.g. after a restart).
    """

    version: str


@dataclass(frozen=True, slots=True)
class RunSmoke:
    """Smoke-test ``colour`` directly (not through the split), and ``old_colour`` if set.

    Report SmokePassed or SmokeFailed with every result.
    """

    colour: Colour
    old_colour: Colour | None


@dataclass(frozen=True, slots=True)
class StartAnalysis:
    """Start (or restart) health analysis of ``candidate`` against ``baseline``."""

    candidate: Colour
    baseline: Colour


@dataclass(frozen=True, slots=True)
class StopAnalysis:
    """Stop health analysis."""


@dataclass(frozen=True, slots=True)
class ScheduleTick:
    """Deliver Tick at wall-clock time ``at``; replaces any earlier timer."""

    at: float


@dataclass(frozen=True, slots=True)
class WaitDrained:
    """Report Drained(colour) once no live replica has a request in flight to ``colour``."""

    colour: Colour


@dataclass(frozen=True, slots=True)
class RunDownMigrations:
    """Revert these migrations, in this order; report DownMigrationsDone or ...Failed."""

    versions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunContract:
    """Apply the pending contract migrations up to ``version``.

    First re-check, atomically with taking the migration lock, that
    ``idle_colour`` has weight 0 and nothing in flight; if not, report
    ContractRefused. Otherwise report ContractApplied or ContractFailed.
    """

    version: str
    idle_colour: Colour


@dataclass(frozen=True, slots=True)
class Notify:
    """Publish a fact: event stream, webhooks, logs (``rollbacks_total`` on fallback_started)."""

    fact: Fact
    rollout_id: int
    phase: Phase
    message: str
    reason: str | None = None


Action: TypeAlias = (
    SetWeights
    | RunPreflight
    | RunMigrations
    | CancelMigrations
    | RunSmoke
    | StartAnalysis
    | StopAnalysis
    | ScheduleTick
    | WaitDrained
    | RunDownMigrations
    | RunContract
    | Notify
)
Actions: TypeAlias = tuple[Action, ...]


# =========================================================================== the table

_ALL_PHASES: Final = frozenset(Phase)

# Which phases accept which events. Guards inside the handlers refine this
# (e.g. Pause while already paused) and raise with a specific message.
ALLOWED: Final[Mapping[type[Event], frozenset[Phase]]] = {
    Start: frozenset({Phase.IDLE, Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED}),
    Pause: frozenset({Phase.RAMP, Phase.BAKE}),
    Resume: frozenset({Phase.RAMP, Phase.BAKE}),
    Promote: frozenset({Phase.RAMP, Phase.BAKE}),
    Abort: ACTIVE_PHASES,
    ContractRequested: frozenset({Phase.PROMOTED}),
    Restarted: _ALL_PHASES - {Phase.IDLE},
    PreflightPassed: frozenset({Phase.PREFLIGHT}),
    PreflightFailed: frozenset({Phase.PREFLIGHT}),
    MigrationsApplied: frozenset({Phase.MIGRATING, Phase.ROLLING_BACK}),
    MigrationFailed: frozenset({Phase.MIGRATING, Phase.ROLLING_BACK}),
    MigrationsCancelled: frozenset({Phase.ROLLING_BACK}),
    SmokePassed: frozenset({Phase.SMOKE}),
    SmokeFailed: frozenset({Phase.SMOKE}),
    WeightsConfirmed: frozenset({Phase.RAMP, Phase.ROLLING_BACK}),
    Drained: frozenset({Phase.PROMOTED, Phase.ROLLING_BACK}),
    Tick: _ALL_PHASES - {Phase.IDLE},
    AnalysisFailed: frozenset({Phase.RAMP, Phase.BAKE}),
    AnalysisInconclusive: frozenset({Phase.RAMP, Phase.BAKE}),
    DownMigrationsDone: frozenset({Phase.ROLLING_BACK}),
    DownMigrationsFailed: frozenset({Phase.ROLLING_BACK}),
    ContractApplied: frozenset({Phase.PROMOTED}),
    ContractFailed: frozenset({Phase.PROMOTED}),
    ContractRefused: frozenset({Phase.PROMOTED}),
}

_AFTER_FORWARD: Final = frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.ABORTED})
_DONE: Final = frozenset({Phase.ROLLED_BACK, Phase.ABORTED})

# Answers to actions of a step the rollout has left: ignored, not errors.
STALE: Final[Mapping[type[Event], frozenset[Phase]]] = {
    PreflightPassed: _AFTER_FORWARD,
    PreflightFailed: _AFTER_FORWARD,
    MigrationsApplied: _DONE,
    MigrationFailed: _DONE,
    MigrationsCancelled: _DONE,
    SmokePassed: _AFTER_FORWARD,
    SmokeFailed: _AFTER_FORWARD,
    WeightsConfirmed: frozenset({Phase.BAKE, Phase.PROMOTED}) | _DONE,
    Drained: frozenset({Phase.RAMP, Phase.BAKE}) | _DONE,
    AnalysisFailed: _AFTER_FORWARD | {Phase.PROMOTED},
    AnalysisInconclusive: _AFTER_FORWARD | {Phase.PROMOTED},
    DownMigrationsDone: _DONE,
    DownMigrationsFailed: _DONE,
}


# =========================================================================== entry points


def transition(rollout: Rollout | None, event: Event, now: float) -> tuple[Rollout, Actions]:
    """Apply ``event`` at time ``now``; return the new record and the actions to perform.

    ``rollout`` is None when no rollout was ever started (phase idle). If the
    returned record is the same object, nothing changed: skip the write.
    Raises :class:`IllegalTransitionError` (the record is unchanged) when the
    event is not allowed in the current phase.
    """
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time in seconds, got {now!r}")
    phase = rollout.phase if rollout is not None else Phase.IDLE
    kind = type(event)
    if phase not in ALLOWED[kind]:
        if rollout is not None and phase in STALE.get(kind, frozenset()):
            return rollout, ()
        raise _illegal(rollout, event)
    if isinstance(event, Start):
        new, actions = _on_start(rollout, event, now)
    elif rollout is None:  # pragma: no cover  # only Start is allowed from idle
        raise _illegal(rollout, event)
    else:
        new, actions = _dispatch(rollout, event, now)
    return new, _ordered(actions)


def resume(rollout: Rollout | None, now: float) -> tuple[Rollout | None, Actions]:
    """What a (re)started controller must do with the stored record.

    Same as ``transition(rollout, Restarted(), now)``; None (no rollout) needs nothing.
    """
    if rollout is None:
        return None, ()
    return transition(rollout, Restarted(), now)


def allowed_events(rollout: Rollout | None) -> tuple[type[Event], ...]:
    """Operator events the table allows now (guards may still refuse them)."""
    phase = rollout.phase if rollout is not None else Phase.IDLE
    return tuple(e for e in OPERATOR_EVENTS if phase in ALLOWED[e])


def _dispatch(r: Rollout, event: Event, now: float) -> tuple[Rollout, Actions]:
    match event:
        case Start():  # pragma: no cover  # handled by transition()
            raise _illegal(r, event)
        case Pause():
            return _on_pause(r, event, now)
        case Resume():
            return _on_resume(r, event, now)
        case Promote():
            return _on_promote(r, event, now)
        case Abort():
            msg = event.message or c.ABORT_MESSAGE
            return _fail(r, now, Reason.OPERATOR_ABORT, msg, by_operator=True)
        case ContractRequested():
            return _on_contract_requested(r, event, now)
        case Restarted():
            return _on_restarted(r, now)
        case PreflightPassed():
            return _on_preflight_passed(r, event, now)
        case PreflightFailed():
            failed = ", ".join(_item_text(i) for i in event.items if not i.ok) or "no detail"
            r = _with_results(r, preflight=event.items)
            return _fail(
                r, now, Reason.PREFLIGHT_FAILED, c.PREFLIGHT_FAILED_MESSAGE.format(failed=failed)
            )
        case MigrationsApplied() | MigrationFailed() | MigrationsCancelled():
            return _on_migrations_result(r, event, now)
        case SmokePassed():
            return _on_smoke_passed(r, event, now)
        case SmokeFailed():
            return _on_smoke_failed(r, event, now)
        case WeightsConfirmed():
            return _on_weights_confirmed(r, event, now)
        case Drained():
            return _on_drained(r, event, now)
        case Tick():
            return _on_tick(r, now)
        case AnalysisFailed():
            return _fail(r, now, event.reason, event.message, failing_since=event.failing_since)
        case AnalysisInconclusive():
            if r.paused or r.promoting:
                return r, ()
            hold = Hold(Reason.ANALYSIS_INCONCLUSIVE, event.message, now)
            msg = c.INCONCLUSIVE_PAUSED_MESSAGE.format(detail=event.message)
            return _hold(r, now, hold, msg)
        case DownMigrationsDone() | DownMigrationsFailed():
            return _on_down_migrations_result(r, event, now)
        case ContractApplied() | ContractFailed() | ContractRefused():
            return _on_contract_result(r, event, now)
        case _:  # pragma: no cover
            assert_never(event)


def _ordered(actions: Iterable[Action]) -> Actions:
    """Traffic first (a fallback's 0 % must not wait for anything), notifications last."""

    def rank(a: Action) -> int:
        return 0 if isinstance(a, SetWeights) else 2 if isinstance(a, Notify) else 1

    return tuple(sorted(actions, key=rank))


# =========================================================================== errors


def _phase_list(phases: Iterable[Phase]) -> str:
    names = [p.value for p in Phase if p in set(phases)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _illegal(r: Rollout | None, event: Event, detail: str | None = None) -> IllegalTransitionError:
    phase = r.phase if r is not None else Phase.IDLE
    if detail is None:
        if r is None:
            detail = c.NO_ROLLOUT_MESSAGE
        elif isinstance(event, Abort) and r.phase is Phase.ROLLING_BACK and r.failure:
            detail = c.ALREADY_ROLLING_BACK_MESSAGE.format(why=r.failure.code)
        else:
            detail = c.ALLOWED_FROM_MESSAGE.format(
                what=type(event).noun, phases=_phase_list(ALLOWED[type(event)])
            )
    return IllegalTransitionError(phase.value, type(event).verb, detail)


# =========================================================================== helpers


def _fields(r: Rollout, **extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": r.id,
        "version": r.version,
        "target": r.target.value,
        "old": r.from_colour.value,
        "step": r.step_index + 1,
        "steps": len(r.steps),
        "weight": c.percent(r.target_bp),
        "timeout": c.human_seconds(r.options.confirm_timeout_seconds),
    }
    base.update(extra)
    return base


def _log(
    r: Rollout,
    now: float,
    fact: Fact,
    to: Phase,
    message: str,
    reason: str | None = None,
) -> tuple[Rollout, Notify]:
    """Move to ``to`` (maybe the same phase), append to the log and say so."""
    entry = LogEntry(at=now, fact=fact, from_phase=r.phase, to_phase=to, message=message)
    log = (*r.log, entry)[-MAX_LOG_ENTRIES:]
    new = replace(r, phase=to, log=log)
    return new, Notify(fact, r.id, to, message, reason)


def _with_results(r: Rollout, **changes: Any) -> Rollout:
    return replace(r, results=replace(r.results, **changes))


def _note(r: Rollout, text: str) -> Rollout:
    return _with_results(r, notes=(*r.results.notes, text))


def _item_text(item: CheckItem | SmokeResult) -> str:
    return f"{item.name} ({item.detail})" if item.detail else item.name


def _request_weight(r: Rollout, now: float, target_bp: int) -> tuple[Rollout, Actions]:
    deadline = now + r.options.confirm_timeout_seconds
    r = replace(r, target_bp=target_bp, peak_bp=max(r.peak_bp, target_bp), deadline=deadline)
    return r, (SetWeights(r.green_bp(target_bp), r.salt), ScheduleTick(deadline))


def _stop_bake_clock(r: Rollout, now: float) -> Rollout:
    if r.bake_started_at is None:
        return r
    return replace(r, bake_elapsed=r.bake_elapsed_at(now), bake_started_at=None)


# =========================================================================== forward path


def _on_start(prev: Rollout | None, e: Start, now: float) -> tuple[Rollout, Actions]:
    if prev is not None and prev.contract is ContractState.RUNNING:
        raise _illegal(prev, e, c.CONTRACT_RUNNING_MESSAGE.format(id=prev.id))
    if e.current_green_bp is not None:
        if e.current_green_bp == 0:
            live = Colour.BLUE
        elif e.current_green_bp == BASIS_POINTS:
            live = Colour.GREEN
        else:
            weight = c.percent(e.current_green_bp)
            raise _illegal(prev, e, c.WEIGHTS_SPLIT_MESSAGE.format(weight=weight))
    else:
        live = prev.live_colour if prev is not None else Colour.BLUE
    r = Rollout(
        id=prev.id + 1 if prev is not None else 1,
        version=e.version,
        target=live.other,
        salt=e.salt,
        steps=e.steps,
        options=e.options,
        started_at=now,
        phase=Phase.IDLE,
    )
    r, note = _log(
        r, now, Fact.ROLLOUT_STARTED, Phase.PREFLIGHT, c.STARTED_MESSAGE.format(**_fields(r))
    )
    return r, (RunPreflight(r.version, r.target), note)


def _on_preflight_passed(r: Rollout, e: PreflightPassed, now: float) -> tuple[Rollout, Actions]:
    r = replace(_with_results(r, preflight=e.items), migrations_in_flight=True)
    passed = sum(1 for i in e.items if i.ok)
    msg = c.PREFLIGHT_PASSED_MESSAGE.format(passed=passed, total=len(e.items))
    r, note = _log(r, now, Fact.PREFLIGHT_PASSED, Phase.MIGRATING, msg)
    return r, (RunMigrations(r.version), note)


def _on_migrations_result(
    r: Rollout, e: MigrationsApplied | MigrationFailed | MigrationsCancelled, now: float
) -> tuple[Rollout, Actions]:
    if not r.migrations_in_flight:  # a duplicate answer
        return r, ()
    r = replace(_with_results(r, migrations=e.applied), migrations_in_flight=False)
    if r.phase is Phase.ROLLING_BACK:
        if r.rollback_step is RollbackStep.MIGRATIONS:
            return _rollback_next(r, now, after=RollbackStep.MIGRATIONS)
        return r, ()
    if isinstance(e, MigrationsApplied):
        phases = ", ".join(sorted({m.phase for m in e.applied})) or "none pending"
        msg = c.MIGRATIONS_APPLIED_MESSAGE.format(count=len(e.applied), phases=phases)
        r, note = _log(r, now, Fact.MIGRATIONS_APPLIED, Phase.SMOKE, msg)
        old = r.from_colour if r.options.check_old_colour else None
        return r, (RunSmoke(r.target, old), note)
    # MigrationsCancelled is only allowed while rolling back, so this is a failure.
    detail = e.message if isinstance(e, MigrationFailed) and e.message else "no detail"
    return _fail(r, now, Reason.MIGRATION_FAILED, c.MIGRATION_FAILED_MESSAGE.format(detail=detail))


def _on_smoke_passed(r: Rollout, e: SmokePassed, now: float) -> tuple[Rollout, Actions]:
    r = replace(_with_results(r, smoke=e.results), analysis_running=True)
    msg = c.SMOKE_PASSED_MESSAGE.format(total=len(e.results))
    r, passed = _log(r, now, Fact.SMOKE_PASSED, Phase.SMOKE, msg)
    r, weights = _request_weight(replace(r, step_index=0), now, r.steps[0].weight_bp)
    r, note = _log(
        r, now, Fact.WEIGHTS_REQUESTED, Phase.RAMP, c.WEIGHTS_REQUESTED_MESSAGE.format(**_fields(r))
    )
    return r, (*weights, StartAnalysis(r.target, r.from_colour), passed, note)


def _on_smoke_failed(r: Rollout, e: SmokeFailed, now: float) -> tuple[Rollout, Actions]:
    r = _with_results(r, smoke=e.results)
    bad = [s for s in e.results if not s.ok]
    old_bad = [s for s in bad if s.colour is r.from_colour]
    if old_bad:
        failed = ", ".join(_item_text(s) for s in old_bad)
        return _fail(
            r,
            now,
            Reason.OLD_COLOUR_SMOKE_FAILED,
            c.OLD_COLOUR_SMOKE_FAILED_MESSAGE.format(**_fields(r, failed=failed)),
        )
    failed = ", ".join(_item_text(s) for s in bad) or "no detail"
    return _fail(
        r, now, Reason.SMOKE_FAILED, c.SMOKE_FAILED_MESSAGE.format(**_fields(r, failed=failed))
    )


def _on_weights_confirmed(r: Rollout, e: WeightsConfirmed, now: float) -> tuple[Rollout, Actions]:
    if r.phase is Phase.ROLLING_BACK:
        if r.rollback_step is not RollbackStep.WEIGHTS or e.green_bp != r.green_bp(0):
            return r, ()
        fb = r.fallback
        fallback = replace(fb, weights_zero_at=now) if fb is not None else None
        r = replace(r, confirmed_bp=0, deadline=None, fallback=fallback)
        since_failing = c.human_seconds(now - fb.failing_since) if fb is not None else "?"
        since_detected = c.human_seconds(now - fb.detected_at) if fb is not None else "?"
        msg = c.FALLBACK_WEIGHTS_ZERO_MESSAGE.format(
            **_fields(r, since_failing=since_failing, since_detected=since_detected)
        )
        r, note = _log(r, now, Fact.FALLBACK_WEIGHTS_ZERO, Phase.ROLLING_BACK, msg)
        r, more = _rollback_next(r, now, after=RollbackStep.WEIGHTS)
        return r, (note, *more)
    if e.green_bp != r.green_bp(r.target_bp):  # an answer for a superseded weight
        return r, ()
    r = replace(r, confirmed_bp=r.target_bp, deadline=None)
    if r.promoting:
        return _promoted(r, now)
    return _enter_bake(r, now)


def _enter_bake(r: Rollout, now: float) -> tuple[Rollout, Actions]:
    r = replace(r, bake_elapsed=0.0, bake_started_at=None if r.paused else now)
    if r.paused:
        msg = c.STEP_REACHED_PAUSED_MESSAGE.format(**_fields(r))
    else:
        bake = c.human_seconds(r.current_step.bake_seconds)
        msg = c.STEP_REACHED_MESSAGE.format(**_fields(r, bake=bake))
    r, note = _log(r, now, Fact.STEP_REACHED, Phase.BAKE, msg)
    return _check_bake(r, now, (note,))


def _check_bake(r: Rollout, now: float, prior: Actions = ()) -> tuple[Rollout, Actions]:
    """Finish the bake if its time is up, else (re)arm the timer for when it is."""
    due = r.bake_due_at
    if due is None:  # paused: the clock is stopped
        return r, prior
    if r.bake_remaining_at(now) > _EPSILON:
        return r, (*prior, ScheduleTick(due))
    r = replace(r, bake_elapsed=r.current_step.bake_seconds, bake_started_at=None)
    if r.step_index == len(r.steps) - 1:
        r, actions = _promoted(r, now)
        return r, (*prior, *actions)
    r, weights = _request_weight(
        replace(r, step_index=r.step_index + 1), now, r.steps[r.step_index + 1].weight_bp
    )
    r, note = _log(
        r, now, Fact.WEIGHTS_REQUESTED, Phase.RAMP, c.WEIGHTS_REQUESTED_MESSAGE.format(**_fields(r))
    )
    return r, (*prior, *weights, note)


def _promoted(r: Rollout, now: float) -> tuple[Rollout, Actions]:
    stop: Actions = (StopAnalysis(),) if r.analysis_running else ()
    r = replace(
        r,
        step_index=len(r.steps) - 1,
        target_bp=BASIS_POINTS,
        confirmed_bp=BASIS_POINTS,
        peak_bp=BASIS_POINTS,
        deadline=None,
        promoting=False,
        hold=None,
        bake_started_at=None,
        analysis_running=False,
        finished_at=now,
        contract=ContractState.DRAINING,
    )
    r, note = _log(
        r, now, Fact.ROLLOUT_PROMOTED, Phase.PROMOTED, c.PROMOTED_MESSAGE.format(**_fields(r))
    )
    return r, (*stop, WaitDrained(r.from_colour), note)


# =========================================================================== operator commands


def _hold(r: Rollout, now: float, hold: Hold, message: str) -> tuple[Rollout, Actions]:
    r = replace(_stop_bake_clock(r, now), hold=hold)
    r, note = _log(r, now, Fact.ROLLOUT_PAUSED, r.phase, message, reason=hold.code)
    return r, (note,)


def _on_pause(r: Rollout, e: Pause, now: float) -> tuple[Rollout, Actions]:
    if r.promoting:
        raise _illegal(r, e, c.PROMOTING_MESSAGE)
    if r.hold is not None:
        raise _illegal(r, e, c.ALREADY_PAUSED_MESSAGE.format(why=r.hold.message))
    left = c.human_seconds(
        r.bake_remaining_at(now) if r.phase is Phase.BAKE else r.current_step.bake_seconds
    )
    msg = e.message or c.PAUSED_MESSAGE.format(**_fields(r, left=left))
    return _hold(r, now, Hold(Reason.OPERATOR_PAUSE, msg, now), msg)


def _on_resume(r: Rollout, e: Resume, now: float) -> tuple[Rollout, Actions]:
    if r.hold is None:
        raise _illegal(r, e, c.NOT_PAUSED_MESSAGE)
    r = replace(r, hold=None)
    if r.phase is Phase.BAKE:
        r = replace(r, bake_started_at=now)
        left = r.bake_remaining_at(now)
    else:
        left = r.current_step.bake_seconds
    msg = c.RESUMED_MESSAGE.format(**_fields(r, left=c.human_seconds(left)))
    r, note = _log(r, now, Fact.ROLLOUT_RESUMED, r.phase, msg)
    if r.phase is Phase.BAKE:
        return _check_bake(r, now, (note,))
    return r, (note,)


def _on_promote(r: Rollout, e: Promote, now: float) -> tuple[Rollout, Actions]:
    if r.promoting:
        raise _illegal(r, e, c.PROMOTING_MESSAGE)
    last = len(r.steps) - 1
    if r.phase is Phase.BAKE and r.step_index == last:
        return _promoted(r, now)
    r = replace(
        r, step_index=last, promoting=True, hold=None, bake_started_at=None, bake_elapsed=0.0
    )
    weights: Actions = ()
    if r.target_bp != BASIS_POINTS:
        r, weights = _request_weight(r, now, BASIS_POINTS)
    r, note = _log(
        r,
        now,
        Fact.PROMOTION_REQUESTED,
        Phase.RAMP,
        c.PROMOTION_REQUESTED_MESSAGE.format(**_fields(r)),
    )
    return r, (*weights, note)


# =========================================================================== failure path


def _fail(
    r: Rollout,
    now: float,
    code: FailureCode,
    message: str,
    *,
    by_operator: bool = False,
    failing_since: float | None = None,
) -> tuple[Rollout, Actions]:
    """Enter rolling_back: traffic to the old colour first, then clean up."""
    cleanup: list[Action] = []
    if r.migrations_in_flight:
        cleanup.append(CancelMigrations(r.version))
    if r.analysis_running:
        cleanup.append(StopAnalysis())
    traffic = r.peak_bp > 0
    since = now if failing_since is None else min(failing_since, now)
    r = replace(
        _stop_bake_clock(r, now),
        failure=Failure(code, message, r.phase, now, by_operator),
        fallback=Fallback(failing_since=since, detected_at=now) if traffic else None,
        hold=None,
        promoting=False,
        analysis_running=False,
        target_bp=0,
        deadline=None,
    )
    template = c.FALLBACK_MESSAGE if traffic else c.NO_FALLBACK_NEEDED_MESSAGE
    r, note = _log(
        r,
        now,
        Fact.FALLBACK_STARTED,
        Phase.ROLLING_BACK,
        template.format(**_fields(r, detail=message)),
        reason=code,
    )
    r, steps = _rollback_next(r, now, after=None)
    return r, (*cleanup, note, *steps)


def _down_plan(r: Rollout) -> tuple[tuple[str, ...], str | None]:
    """Versions to revert (newest first) and the irreversible version that stops them."""
    versions: list[str] = []
    for m in reversed(r.results.migrations):
        if not m.reversible:
            return tuple(versions), m.version
        versions.append(m.version)
    return tuple(versions), None


def _rollback_next(
    r: Rollout, now: float, *, after: RollbackStep | None
) -> tuple[Rollout, Actions]:
    """Enter the first rollback step after ``after`` that is needed, or finish."""
    start = 0 if after is None else _ROLLBACK_ORDER.index(after) + 1
    opts = r.options
    for step in _ROLLBACK_ORDER[start:]:
        if step is RollbackStep.WEIGHTS and r.peak_bp > 0:
            deadline = now + opts.confirm_timeout_seconds
            r = replace(r, rollback_step=step, deadline=deadline)
            return r, (SetWeights(r.green_bp(0), r.salt), ScheduleTick(deadline))
        if step is RollbackStep.DRAIN and r.peak_bp > 0:
            deadline = now + opts.drain_timeout_seconds
            r = replace(r, rollback_step=step, deadline=deadline)
            return r, (WaitDrained(r.target), ScheduleTick(deadline))
        if step is RollbackStep.MIGRATIONS and r.migrations_in_flight:
            # CancelMigrations went out when the rollback started.
            return replace(r, rollback_step=step, deadline=None), ()
        if step is RollbackStep.DOWN_MIGRATIONS and opts.down_migrations_on_rollback:
            if r.fallback is not None and r.fallback.drain_timed_out:
                continue
            versions, kept = _down_plan(r)
            if kept is not None:
                r = _note(r, c.DOWN_MIGRATIONS_KEPT_MESSAGE.format(version=kept))
            if versions:
                r = replace(r, rollback_step=step, deadline=None)
                msg = c.DOWN_MIGRATIONS_STARTED_MESSAGE.format(
                    count=len(versions), versions=", ".join(versions)
                )
                r, note = _log(r, now, Fact.DOWN_MIGRATIONS_STARTED, Phase.ROLLING_BACK, msg)
                return r, (RunDownMigrations(versions), note)
    return _finish_rollback(r, now)


def _finish_rollback(r: Rollout, now: float) -> tuple[Rollout, Actions]:
    failure = r.failure
    assert failure is not None  # noqa: S101  # set by _fail on entering rolling_back
    r = replace(r, rollback_step=None, deadline=None, finished_at=now)
    if failure.by_operator:
        fact, to, template = Fact.ROLLOUT_ABORTED, Phase.ABORTED, c.ABORTED_MESSAGE
    else:
        fact, to, template = Fact.ROLLOUT_ROLLED_BACK, Phase.ROLLED_BACK, c.ROLLED_BACK_MESSAGE
    r, note = _log(
        r, now, fact, to, template.format(**_fields(r, reason=failure.message)), reason=failure.code
    )
    return r, (note,)


def _on_drained(r: Rollout, e: Drained, now: float) -> tuple[Rollout, Actions]:
    if r.phase is Phase.ROLLING_BACK:
        if r.rollback_step is not RollbackStep.DRAIN or e.colour is not r.target:
            return r, ()
        fb = r.fallback
        r = replace(r, deadline=None, fallback=replace(fb, drained_at=now) if fb else None)
        r, note = _log(
            r,
            now,
            Fact.FALLBACK_DRAINED,
            Phase.ROLLING_BACK,
            c.FALLBACK_DRAINED_MESSAGE.format(**_fields(r)),
        )
        r, more = _rollback_next(r, now, after=RollbackStep.DRAIN)
        return r, (note, *more)
    # promoted: the old colour finished its last requests
    if r.contract is not ContractState.DRAINING or e.colour is not r.from_colour:
        return r, ()
    grace = r.options.contract_grace_seconds
    r = replace(r, contract=ContractState.WAITING_GRACE, contract_due_at=now + grace)
    msg = c.OLD_COLOUR_DRAINED_MESSAGE.format(**_fields(r, grace=c.human_seconds(grace)))
    r, note = _log(r, now, Fact.OLD_COLOUR_DRAINED, Phase.PROMOTED, msg)
    return _check_grace(r, now, (note,))


def _on_down_migrations_result(
    r: Rollout, e: DownMigrationsDone | DownMigrationsFailed, now: float
) -> tuple[Rollout, Actions]:
    if r.rollback_step is not RollbackStep.DOWN_MIGRATIONS:
        return r, ()
    r = _with_results(r, down_migrations=e.reverted)
    if isinstance(e, DownMigrationsFailed):
        detail = e.message or "no detail"
        msg = c.DOWN_MIGRATIONS_FAILED_MESSAGE.format(
            **_fields(r, count=len(e.reverted), detail=detail)
        )
        r = _note(r, msg)
        fact, reason = Fact.DOWN_MIGRATIONS_FAILED, Reason.DOWN_MIGRATIONS_FAILED
    else:
        msg = c.DOWN_MIGRATIONS_DONE_MESSAGE.format(count=len(e.reverted))
        fact, reason = Fact.DOWN_MIGRATIONS_DONE, None
    r, note = _log(r, now, fact, Phase.ROLLING_BACK, msg, reason=reason)
    r, finish = _finish_rollback(r, now)
    return r, (note, *finish)


# =========================================================================== time


def _on_tick(r: Rollout, now: float) -> tuple[Rollout, Actions]:
    due = r.next_due
    if r.phase is Phase.BAKE:
        return _check_bake(r, now)
    if due is None:
        return r, ()
    if now + _EPSILON < due:  # early: re-arm
        return r, (ScheduleTick(due),)
    if r.phase is Phase.RAMP:
        msg = c.WEIGHTS_NOT_CONFIRMED_MESSAGE.format(**_fields(r))
        return _fail(r, now, Reason.WEIGHTS_NOT_CONFIRMED, msg)
    if r.phase is Phase.PROMOTED:
        return _check_grace(r, now)
    # rolling_back: a confirmation or drain deadline passed
    if r.rollback_step is RollbackStep.WEIGHTS:
        r, weights = _rollback_next(r, now, after=None)  # re-enters WEIGHTS: ask again
        msg = c.WEIGHTS_RETRIED_MESSAGE.format(**_fields(r))
        r, note = _log(r, now, Fact.WEIGHTS_RETRIED, Phase.ROLLING_BACK, msg)
        return r, (*weights, note)
    fb = r.fallback
    r = replace(r, deadline=None, fallback=replace(fb, drain_timed_out=True) if fb else None)
    timeout = c.human_seconds(r.options.drain_timeout_seconds)
    msg = c.DRAIN_TIMED_OUT_MESSAGE.format(**_fields(r, timeout=timeout))
    r, note = _log(
        _note(r, msg),
        now,
        Fact.DRAIN_TIMED_OUT,
        Phase.ROLLING_BACK,
        msg,
        reason=Reason.DRAIN_TIMED_OUT,
    )
    r, more = _rollback_next(r, now, after=RollbackStep.DRAIN)
    return r, (note, *more)


# =========================================================================== contract


def _check_grace(r: Rollout, now: float, prior: Actions = ()) -> tuple[Rollout, Actions]:
    due = r.contract_due_at
    if r.contract is not ContractState.WAITING_GRACE or due is None:
        return r, prior
    if now + _EPSILON < due:
        return r, (*prior, ScheduleTick(due))
    if r.options.auto_contract:
        r, actions = _run_contract(r, now)
        return r, (*prior, *actions)
    r = replace(r, contract=ContractState.DUE)
    r, note = _log(
        r, now, Fact.CONTRACT_DUE, Phase.PROMOTED, c.CONTRACT_DUE_MESSAGE.format(**_fields(r))
    )
    return r, (*prior, note)


def _run_contract(r: Rollout, now: float) -> tuple[Rollout, Actions]:
    r = replace(r, contract=ContractState.RUNNING)
    r, note = _log(
        r,
        now,
        Fact.CONTRACT_STARTED,
        Phase.PROMOTED,
        c.CONTRACT_STARTED_MESSAGE.format(**_fields(r)),
    )
    return r, (RunContract(r.version, r.from_colour), note)


def _on_contract_requested(r: Rollout, e: ContractRequested, now: float) -> tuple[Rollout, Actions]:
    state = r.contract
    grace = c.human_seconds(r.options.contract_grace_seconds)
    match state:
        case ContractState.DRAINING:
            raise _illegal(r, e, c.CONTRACT_SERVING_MESSAGE.format(**_fields(r, grace=grace)))
        case ContractState.WAITING_GRACE:
            if not e.skip_grace:
                left = c.human_seconds((r.contract_due_at or now) - now)
                raise _illegal(r, e, c.CONTRACT_GRACE_MESSAGE.format(left=left))
            return _run_contract(r, now)
        case ContractState.DUE | ContractState.FAILED | ContractState.REFUSED:
            return _run_contract(r, now)
        case ContractState.RUNNING:
            raise _illegal(r, e, c.CONTRACT_RUNNING_MESSAGE.format(id=r.id))
        case ContractState.DONE:
            raise _illegal(r, e, c.CONTRACT_DONE_MESSAGE.format(id=r.id))
        case ContractState.NOT_DUE:  # pragma: no cover  # promoted rollouts are past not_due
            raise _illegal(r, e)
        case _:  # pragma: no cover
            assert_never(state)


def _on_contract_result(
    r: Rollout, e: ContractApplied | ContractFailed | ContractRefused, now: float
) -> tuple[Rollout, Actions]:
    if r.contract is not ContractState.RUNNING:
        return r, ()
    if isinstance(e, ContractApplied):
        r = replace(_with_results(r, contract=e.applied), contract=ContractState.DONE)
        msg = c.CONTRACT_APPLIED_MESSAGE.format(count=len(e.applied))
        r, note = _log(r, now, Fact.CONTRACT_APPLIED, Phase.PROMOTED, msg)
    elif isinstance(e, ContractFailed):
        r = replace(_with_results(r, contract=e.applied), contract=ContractState.FAILED)
        msg = c.CONTRACT_FAILED_MESSAGE.format(detail=e.message or "no detail")
        r, note = _log(
            r, now, Fact.CONTRACT_FAILED, Phase.PROMOTED, msg, reason=Reason.CONTRACT_FAILED
        )
    else:
        r = replace(r, contract=ContractState.REFUSED)
        msg = c.CONTRACT_REFUSED_MESSAGE.format(
            **_fields(r, detail=e.message or "the old colour is serving")
        )
        reason = Reason.CONTRACT_REFUSED_OLD_COLOUR_SERVING
        r, note = _log(r, now, Fact.CONTRACT_REFUSED, Phase.PROMOTED, msg, reason=reason)
    return r, (note,)


# =========================================================================== restart


def _on_restarted(r: Rollout, now: float) -> tuple[Rollout, Actions]:
    """Redo the current step's actions; never change step or weight.

    Deadlines of waits restart from ``now`` (the answer may have been lost with
    the old process). A bake whose time ran out while the controller was down
    ends on the first Tick, after analysis has been restarted.
    """
    analysis: Actions = (StartAnalysis(r.target, r.from_colour),) if r.analysis_running else ()
    actions: Actions
    match r.phase:
        case Phase.PREFLIGHT:
            actions = (RunPreflight(r.version, r.target),)
        case Phase.MIGRATING:
            actions = (RunMigrations(r.version),)
        case Phase.SMOKE:
            actions = (RunSmoke(r.target, r.from_colour if r.options.check_old_colour else None),)
        case Phase.RAMP:
            r, weights = _request_weight(r, now, r.target_bp)
            actions = (*weights, *analysis)
        case Phase.BAKE:
            again = SetWeights(r.green_bp(r.target_bp), r.salt, wait_confirm=False)
            due = r.bake_due_at
            actions = (again, *analysis, *((ScheduleTick(due),) if due is not None else ()))
        case Phase.ROLLING_BACK:
            step = r.rollback_step
            cancel: Actions = (CancelMigrations(r.version),) if r.migrations_in_flight else ()
            if step is RollbackStep.WEIGHTS or step is RollbackStep.DRAIN:
                r, redo = _rollback_next(r, now, after=_previous_step(step))
            elif step is RollbackStep.DOWN_MIGRATIONS:
                redo = (RunDownMigrations(_down_plan(r)[0]),)
            else:
                redo = ()
            actions = (*cancel, *redo)
        case Phase.PROMOTED:
            if r.contract is ContractState.DRAINING:
                actions = (WaitDrained(r.from_colour),)
            elif r.contract is ContractState.WAITING_GRACE and r.contract_due_at is not None:
                actions = (ScheduleTick(r.contract_due_at),)
            elif r.contract is ContractState.RUNNING:
                actions = (RunContract(r.version, r.from_colour),)
            else:
                return r, ()
        case Phase.ROLLED_BACK | Phase.ABORTED:
            return r, ()
        case Phase.IDLE:  # pragma: no cover  # not in ALLOWED
            raise _illegal(r, Restarted())
        case _:  # pragma: no cover
            assert_never(r.phase)
    msg = c.RESTARTED_MESSAGE.format(phase=r.phase.value, detail=_where(r, now))
    r, note = _log(r, now, Fact.CONTROLLER_RESTARTED, r.phase, msg)
    return r, (*actions, note)


def _where(r: Rollout, now: float) -> str:
    if r.phase is Phase.BAKE:
        left = c.human_seconds(r.bake_remaining_at(now))
        paused = ", paused" if r.paused else ""
        return f" (step {r.step_index + 1}/{len(r.steps)}, {left} of bake left{paused})"
    if r.phase is Phase.RAMP:
        return f" (step {r.step_index + 1}/{len(r.steps)}, {c.percent(r.target_bp)})"
    if r.phase is Phase.ROLLING_BACK and r.rollback_step is not None:
        return f" ({r.rollback_step.value})"
    if r.phase is Phase.PROMOTED:
        return f" (contract {r.contract.value})"
    return ""


def _previous_step(step: RollbackStep) -> RollbackStep | None:
    i = _ROLLBACK_ORDER.index(step)
    return _ROLLBACK_ORDER[i - 1] if i else None


# =========================================================================== JSON decoding


_E = TypeVar("_E", bound=StrEnum)


class _Obj:
    """A JSON object being decoded; every error names the path."""

    _MISSING: ClassVar[object] = object()

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise _corrupt(path, "expected an object", data)
        self.data: dict[str, object] = data
        self.path = path
        self.seen: set[str] = set()

    def _get(self, key: str, default: object = _MISSING) -> object:
        self.seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is _Obj._MISSING:
            raise _corrupt(f"{self.path}.{key}", "missing", None)
        return default

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def text(self, key: str, default: str | None = None) -> str:
        value = self._get(key, default if default is not None else _Obj._MISSING)
        if not isinstance(value, str):
            raise _corrupt(self.at(key), "expected a string", value)
        return value

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise _corrupt(self.at(key), "expected true or false", value)
        return value

    def integer(self, key: str, lo: int = 0, hi: int | None = None) -> int:
        value = self._get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < lo
            or (hi is not None and value > hi)
        ):
            bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise _corrupt(self.at(key), f"expected an integer {bound}", value)
        return value

    def number(self, key: str) -> float:
        value = self._get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _corrupt(self.at(key), "expected a finite number", value)
        return float(value)

    def opt_number(self, key: str) -> float | None:
        return None if self._get(key, None) is None else self.number(key)

    def enum(self, key: str, cls: type[_E]) -> _E:
        value = self._get(key)
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return cls(value)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise _corrupt(self.at(key), f"expected one of {known}", value) from None

    def opt_enum(self, key: str, cls: type[_E]) -> _E | None:
        return None if self._get(key, None) is None else self.enum(key, cls)

    def child(self, key: str) -> _Obj:
        return _Obj(self._get(key), self.at(key))

    def opt_child(self, key: str) -> _Obj | None:
        return None if self._get(key, None) is None else self.child(key)

    def items(self, key: str) -> list[tuple[object, str]]:
        value = self._get(key)
        if not isinstance(value, list):
            raise _corrupt(self.at(key), "expected a list", value)
        return [(item, f"{self.at(key)}[{i}]") for i, item in enumerate(value)]

    def done(self) -> None:
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise _corrupt(f"{self.path}.{extra[0]}", "unknown field", self.data[extra[0]])


def _corrupt(path: str, problem: str, value: object) -> RolloutRecordError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    got = "" if problem in ("missing", "unknown field") else f", got {shown}"
    return RolloutRecordError(
        f"stored rollout record is corrupt: {path}: {problem}{got}. "
        "Inspect the state document (`bluegreen status --output json`); restore it from "
        "history or clear the rollout before starting a new one"
    )


def _decode_list(o: _Obj, key: str, decode: Any) -> tuple[Any, ...]:
    return tuple(decode(_Obj(item, path)) for item, path in o.items(key))


def _decode_migration(o: _Obj) -> AppliedMigration:
    m = AppliedMigration(
        o.text("version"),
        o.text("name"),
        o.text("phase"),
        o.number("duration_seconds"),
        o.flag("reversible"),
    )
    o.done()
    return m


def _decode_check(o: _Obj) -> CheckItem:
    item = CheckItem(o.text("name"), o.flag("ok"), o.text("detail", ""))
    o.done()
    return item


def _decode_smoke(o: _Obj) -> SmokeResult:
    s = SmokeResult(
        o.enum("colour", Colour),
        o.text("name"),
        o.flag("ok"),
        o.text("detail", ""),
        o.number("duration_seconds"),
    )
    o.done()
    return s


def _decode_log(o: _Obj) -> LogEntry:
    entry = LogEntry(
        o.number("at"),
        o.enum("fact", Fact),
        o.enum("from_phase", Phase),
        o.enum("to_phase", Phase),
        o.text("message"),
    )
    o.done()
    return entry


def _decode_step(o: _Obj) -> Step:
    weight = o.integer("weight_bp", 1, BASIS_POINTS)
    step = Step(weight, o.number("bake_seconds"))
    o.done()
    return step


def _decode_rollout(data: object) -> Rollout:
    o = _Obj(data, "rollout")
    schema = o.integer("schema")
    if schema != SCHEMA_VERSION:
        raise RolloutRecordError(
            f"stored rollout record has schema {schema}; this bluegreen reads schema "
            f"{SCHEMA_VERSION}. Upgrade bluegreen on every replica to the same version"
        )
    try:
        opts_o = o.child("options")
        options = RolloutOptions(
            confirm_timeout_seconds=opts_o.number("confirm_timeout_seconds"),
            drain_timeout_seconds=opts_o.number("drain_timeout_seconds"),
            down_migrations_on_rollback=opts_o.flag("down_migrations_on_rollback"),
            check_old_colour=opts_o.flag("check_old_colour"),
            contract_grace_seconds=opts_o.number("contract_grace_seconds"),
            auto_contract=opts_o.flag("auto_contract"),
        )
        opts_o.done()
        steps_raw = _decode_list(o, "steps", _decode_step)
        try:
            steps = normalize_steps(steps_raw)
        except ValueError as exc:
            raise _corrupt("rollout.steps", str(exc), None) from None
        if steps != steps_raw:
            raise _corrupt("rollout.steps", "the last step must be 100 %", None)

        hold = None
        if (h := o.opt_child("hold")) is not None:
            hold = Hold(h.enum("code", Reason), h.text("message"), h.number("at"))
            h.done()
        failure = None
        if (f := o.opt_child("failure")) is not None:
            try:
                code = c.parse_failure_code(f.text("code"))
            except ValueError as exc:
                raise _corrupt("rollout.failure.code", str(exc), None) from None
            failure = Failure(
                code,
                f.text("message"),
                f.enum("phase", Phase),
                f.number("at"),
                f.flag("by_operator"),
            )
            f.done()
        fallback = None
        if (b := o.opt_child("fallback")) is not None:
            fallback = Fallback(
                b.number("failing_since"),
                b.number("detected_at"),
                b.opt_number("weights_zero_at"),
                b.opt_number("drained_at"),
                b.flag("drain_timed_out"),
            )
            b.done()
        res = o.child("results")
        results = Results(
            preflight=_decode_list(res, "preflight", _decode_check),
            migrations=_decode_list(res, "migrations", _decode_migration),
            smoke=_decode_list(res, "smoke", _decode_smoke),
            down_migrations=_decode_list(res, "down_migrations", _decode_migration),
            contract=_decode_list(res, "contract", _decode_migration),
            notes=tuple(_str_item(item, path) for item, path in res.items("notes")),
        )
        res.done()
        target = o.enum("target", Colour)
        if o.enum("from", Colour) is not target.other:
            raise _corrupt(
                "rollout.from", "must be the colour other than target", o.data.get("from")
            )
        r = Rollout(
            id=o.integer("id", 1),
            version=o.text("version"),
            target=target,
            salt=o.text("salt"),
            steps=steps,
            options=options,
            started_at=o.number("started_at"),
            phase=o.enum("phase", Phase),
            step_index=o.integer("step_index", 0, len(steps) - 1),
            target_bp=o.integer("target_bp", 0, BASIS_POINTS),
            confirmed_bp=o.integer("confirmed_bp", 0, BASIS_POINTS),
            peak_bp=o.integer("peak_bp", 0, BASIS_POINTS),
            deadline=o.opt_number("deadline"),
            promoting=o.flag("promoting"),
            hold=hold,
            bake_started_at=o.opt_number("bake_started_at"),
            bake_elapsed=o.number("bake_elapsed"),
            analysis_running=o.flag("analysis_running"),
            migrations_in_flight=o.flag("migrations_in_flight"),
            rollback_step=o.opt_enum("rollback_step", RollbackStep),
            failure=failure,
            fallback=fallback,
            contract=o.enum("contract", ContractState),
            contract_due_at=o.opt_number("contract_due_at"),
            finished_at=o.opt_number("finished_at"),
            results=results,
            log=_decode_list(o, "log", _decode_log),
        )
        o.done()
    except ValueError as exc:  # a value type refused its field
        raise RolloutRecordError(f"stored rollout record is corrupt: {exc}") from None
    problem = invariant_violation(r)
    if problem:
        raise RolloutRecordError(f"stored rollout record {r.id} is inconsistent: {problem}")
    return r


def _str_item(item: object, path: str) -> str:
    if not isinstance(item, str):
        raise _corrupt(path, "expected a string", item)
    return item


def invariant_violation(r: Rollout) -> str | None:
    """The first broken invariant of a record, or None. Used on load and by tests."""
    if r.phase is Phase.IDLE:
        return "phase idle is never stored (no rollout is idle)"
    if not r.target_bp <= r.peak_bp:
        return f"target_bp {r.target_bp} above peak_bp {r.peak_bp}"
    if (r.phase is Phase.ROLLING_BACK) != (r.rollback_step is not None):
        return f"rollback_step {r.rollback_step} does not fit phase {r.phase}"
    if r.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.ABORTED) and r.failure is None:
        return f"phase {r.phase} without a failure reason"
    if r.phase is Phase.ABORTED and r.failure is not None and not r.failure.by_operator:
        return "phase aborted but the failure was not an operator abort"
    if r.phase is Phase.ROLLED_BACK and r.failure is not None and r.failure.by_operator:
        return "phase rolled_back but the failure was an operator abort"
    if (r.phase is Phase.PROMOTED) != (r.contract is not ContractState.NOT_DUE):
        return f"contract {r.contract} does not fit phase {r.phase}"
    if r.phase in (Phase.RAMP, Phase.BAKE) and r.target_bp != r.current_step.weight_bp:
        return f"target_bp {r.target_bp} is not step {r.step_index + 1}'s weight"
    if r.phase is Phase.BAKE and r.confirmed_bp != r.target_bp:
        return "baking a weight that was not confirmed"
    if r.phase is Phase.PROMOTED and r.target_bp != BASIS_POINTS:
        return "promoted below 100 %"
    if r.phase in (Phase.ROLLED_BACK, Phase.ABORTED) and r.target_bp != 0:
        return f"finished fallback with the target at {r.target_bp} bp"
    if r.phase in (Phase.PREFLIGHT, Phase.MIGRATING, Phase.SMOKE) and r.peak_bp != 0:
        return f"phase {r.phase} but the target already had traffic"
    if r.bake_started_at is not None and (r.phase is not Phase.BAKE or r.paused):
        return "bake clock running outside an unpaused bake"
    if r.promoting and r.phase is not Phase.RAMP:
        return "promoting outside ramp"
    if r.phase in FINISHED_PHASES and r.finished_at is None:
        return f"phase {r.phase} without finished_at"
    return None
