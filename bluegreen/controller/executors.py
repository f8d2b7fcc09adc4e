"""The controller's actions as I/O: one small function per action kind.

Each function performs one action of :mod:`bluegreen.controller.machine` and
returns the event that reports its result (or None when the result is a
timeout the machine already waits for with its own deadline). They never
decide what the rollout does next; library errors become event details at
this boundary, so an action never leaves the rollout waiting forever:

=================  ==========================================================
SetWeights         write green's weight (only if the record still wants it),
                   wait until every live replica applied it -> WeightsConfirmed
RunPreflight       :func:`~bluegreen.controller.preflight.run_preflight`
                   -> PreflightPassed | PreflightFailed
RunMigrations      the migration runner's ``apply`` of the expand and migrate
                   phases (it lints first) -> MigrationsApplied | MigrationFailed;
                   with the stop event set: MigrationsCancelled
CancelMigrations   nothing running (a restart): MigrationsCancelled with what
                   this rollout applied
RunSmoke           :func:`~bluegreen.controller.smoke.run_smoke_action`
WaitDrained        no live replica has a request in flight to the colour
RunDownMigrations  ``rollback`` of exactly these versions -> DownMigrations...
RunContract        re-check the old colour is idle, then ``apply`` the contract
                   phase -> ContractApplied | ContractFailed | ContractRefused
StartAnalysis      one window every ``health.analysis.interval``: assess the
                   target against the live colour -> AnalysisFailed
                   (AnalysisInconclusive is posted while it goes on)
=================  ==========================================================

"This rollout's migrations" are found in the migration history: applied
expand/migrate rows that started after the rollout did (by the database's
clock, corrected for the offset between it and ours), so an attempt after a
restart reports the ones an earlier attempt applied too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import asyncpg
import structlog

from bluegreen.config import Config
from bluegreen.controller import records
from bluegreen.controller.machine import (
    DEFAULT_STEPS,
    AnalysisFailed,
    AnalysisInconclusive,
    AppliedMigration,
    CheckItem,
    ContractApplied,
    ContractFailed,
    ContractRefused,
    DownMigrationsDone,
    DownMigrationsFailed,
    Drained,
    Event,
    MigrationFailed,
    MigrationsApplied,
    MigrationsCancelled,
    Notify,
    PreflightFailed,
    PreflightPassed,
    Rollout,
    RolloutOptions,
    RunContract,
    RunDownMigrations,
    RunMigrations,
    RunPreflight,
    RunSmoke,
    SetWeights,
    SmokeFailed,
    SmokePassed,
    SmokeResult,
    StartAnalysis,
    Step,
    WaitDrained,
    WeightsConfirmed,
)
from bluegreen.controller.preflight import Attestation, PreflightInputs, run_preflight
from bluegreen.controller.smoke import run_smoke_action
from bluegreen.controller.stats import (
    ReplicaTraffic,
    Traffic,
    cluster_window,
    drain_status,
    traffic_from_extra,
    traffic_of,
)
from bluegreen.errors import BluegreenError, StateError
from bluegreen.health.analysis import AnalysisRun, Decision, Verdict, assess
from bluegreen.health.probes import HealthProber
from bluegreen.metrics import StatsSnapshot
from bluegreen.migrations import runner as migrations
from bluegreen.migrations.events import Event as MigrationEvent
from bluegreen.migrations.events import MigrationFinished, MigrationStarted, StepFinished
from bluegreen.migrations.plan import Outcome
from bluegreen.notify import Notification
from bluegreen.rollout_config import HealthConfig, NotificationsConfig, PreflightConfig, SmokeConfig
from bluegreen.routing import BASIS_POINTS, Colour
from bluegreen.state.model import HistoryKind, StateDocument, with_weights
from bluegreen.state.store import StateStore

log = structlog.get_logger("bluegreen.controller")

EARLY_PHASES: Final = ("expand", "migrate")
CONTRACT_PHASES: Final = ("contract",)
DRAIN_POLL: Final = 0.05  # seconds between looks at the replicas' in-flight counts
CANCEL_GRACE: Final = 10.0  # a migration step asked to stop gets this long to reach a safe point
CLOCK_SLACK: Final = 0.5  # seconds: migrations started this much before the rollout still count


class LocalProxy(Protocol):
    """What the controller reads from the proxy in its own process."""

    def stats_snapshot(self) -> StatsSnapshot: ...

    def in_flight(self, colour: Colour) -> int: ...


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """What the controller needs from the config (see :meth:`from_config`)."""

    steps: tuple[Step, ...] = DEFAULT_STEPS
    options: RolloutOptions = field(default_factory=RolloutOptions)
    leadership_retry: float = 2.0
    migrations_dir: Path | None = None
    database_url: str | None = None
    allow_hazards: frozenset[str] = frozenset()
    run_options: migrations.RunOptions = field(default_factory=migrations.RunOptions)
    servers: Mapping[Colour, tuple[str, ...]] = field(default_factory=dict)
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    metrics_url: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> ControllerSettings:
        """Settings from a validated config."""
        r = config.rollout
        m = r.migrations
        return cls(
            steps=tuple(Step(s.weight_bp, s.bake) for s in r.steps),
            options=RolloutOptions(
                confirm_timeout_seconds=r.confirm_timeout,
                drain_timeout_seconds=r.drain_timeout,
                down_migrations_on_rollback=r.down_migrations_on_rollback,
                check_old_colour=r.check_old_colour,
                contract_grace_seconds=r.contract_grace,
                auto_contract=r.auto_contract,
            ),
            leadership_retry=r.leadership_retry,
            migrations_dir=Path(m.directory) if m.directory else None,
            database_url=m.database_url,
            allow_hazards=frozenset(m.allow_hazards),
            run_options=migrations.RunOptions(
                lock_timeout=m.lock_timeout,
                statement_timeout=m.statement_timeout,
                application_name="bluegreen-rollout",
            ),
            servers={c: tuple(str(a) for a in config.upstreams[c.value].servers) for c in Colour},
            smoke=config.smoke,
            health=config.health,
            preflight=config.preflight,
            notifications=config.notifications,
        )

    @property
    def migrations_configured(self) -> bool:
        """Whether rollouts run migrations at all."""
        return self.migrations_dir is not None and bool(self.database_url)


@dataclass
class ExecutorContext:
    """What the executors share: the store, the settings, the local proxy and prober."""

    store: StateStore
    settings: ControllerSettings
    actor: str
    clock: Callable[[], float] = time.time
    proxy: LocalProxy | None = None
    prober: HealthProber | None = None
    replica_id: str | None = None
    analysis: dict[str, Any] = field(default_factory=dict)  # the latest verdict, for the API


def _now(ctx: ExecutorContext) -> datetime:
    return datetime.fromtimestamp(ctx.clock(), UTC)


# =========================================================================== weights


async def set_weights(
    ctx: ExecutorContext, action: SetWeights, rollout: Rollout
) -> WeightsConfirmed | None:
    """Write the weight (unless the record moved on) and wait for every live replica."""
    stale = False

    def change(doc: StateDocument) -> StateDocument:
        nonlocal stale
        stale = not records.weights_wanted(doc, rollout.id, action.green_bp)
        if stale:
            return doc
        reason = f"rollout {rollout.id} of {rollout.version}"
        salt = action.salt or None
        return with_weights(doc, action.green_bp, ctx.actor, _now(ctx), salt=salt, reason=reason)

    bound = log.bind(rollout_id=rollout.id, green_percent=action.green_bp / 100)
    deadline = rollout.deadline
    timeout = rollout.options.confirm_timeout_seconds
    if deadline is not None:
        timeout = max(0.05, deadline - ctx.clock())
    try:
        doc = await ctx.store.update(change)
        if stale:
            bound.info("weights_request_superseded")
            return None
        if not action.wait_confirm:
            return None
        if await ctx.store.wait_applied(doc.version, timeout):
            bound.info("weights_confirmed", version=doc.version)
            return WeightsConfirmed(action.green_bp)
        behind = [
            s.info.id
            for s in await ctx.store.replicas()
            if s.alive and s.info.applied_version < doc.version
        ]
        bound.warning("weights_not_confirmed", version=doc.version, behind=behind)
    except StateError as exc:
        bound.warning("weights_write_failed", error=str(exc))
    return None


# =========================================================================== preflight


def attestations_of(doc: StateDocument, rollout_id: int) -> tuple[Attestation, ...]:
    """The attestations recorded with the start of rollout ``rollout_id``."""
    for entry in reversed(doc.history):
        detail = entry.detail
        if entry.kind != HistoryKind.ROLLOUT_PHASE or detail.get("rollout_id") != rollout_id:
            continue
        raw = detail.get("attestations")
        if not isinstance(raw, list):
            continue
        found = []
        for item in raw:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                at = item.get("at")
                found.append(
                    Attestation(
                        name=item["name"],
                        by=str(item.get("by") or "unknown"),
                        at=float(at) if isinstance(at, int | float) else 0.0,
                        note=str(item.get("note") or ""),
                    )
                )
        return tuple(found)
    return ()


def live_version_of(doc: StateDocument, rollout_id: int) -> str | None:
    """The version the live colour ran when rollout ``rollout_id`` started, if recorded."""
    for entry in reversed(doc.history):
        detail = entry.detail
        if entry.kind == HistoryKind.ROLLOUT_PHASE and detail.get("rollout_id") == rollout_id:
            value = detail.get("live_version")
            if isinstance(value, str):
                return value
    return None


def preflight_inputs(
    ctx: ExecutorContext,
    version: str,
    target: Colour,
    attestations: Sequence[Attestation] = (),
) -> PreflightInputs:
    """The preflight of a rollout of ``version`` to ``target`` with this controller's config."""
    s = ctx.settings
    return PreflightInputs(
        version=version,
        target=target,
        servers=s.servers,
        preflight=s.preflight,
        health=s.health,
        smoke=s.smoke,
        notifications=s.notifications,
        migrations_dir=s.migrations_dir,
        database_url=s.database_url,
        allow_hazards=s.allow_hazards,
        metrics_url=s.metrics_url,
        attestations=tuple(attestations),
    )


async def preflight(
    ctx: ExecutorContext, action: RunPreflight, rollout: Rollout
) -> PreflightPassed | PreflightFailed:
    """Run the checklist (with the attestations given at start)."""
    attested = attestations_of(ctx.store.current, rollout.id)
    try:
        report = await run_preflight(
            preflight_inputs(ctx, action.version, action.target, attested),
            store=ctx.store,
            actor=ctx.actor,
            clock=ctx.clock,
        )
    except BluegreenError as exc:
        return PreflightFailed((CheckItem("preflight", False, str(exc)),))
    return report.event()


# =========================================================================== migrations


async def _db_offset(url: str) -> float:
    """Seconds the database's clock is ahead of ours (history times are the database's)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        before = time.time()
        value = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())")
        after = time.time()
    finally:
        await conn.close()
    return float(value) - (before + after) / 2


async def applied_for(
    ctx: ExecutorContext, rollout: Rollout, phases: Sequence[str]
) -> tuple[AppliedMigration, ...]:
    """Migrations of ``phases`` applied since ``rollout`` started, in the order applied."""
    s = ctx.settings
    if not s.migrations_configured:
        return ()
    url, directory = _migrations(s)
    offset = await _db_offset(url)
    cutoff = datetime.fromtimestamp(rollout.started_at + offset - CLOCK_SLACK, UTC)
    statuses = await migrations.status(url, directory, options=s.run_options)
    found = [
        st
        for st in statuses
        if st.applied is not None and st.phase in phases and st.applied.started_at >= cutoff
    ]
    found.sort(key=lambda st: st.applied.id if st.applied is not None else 0)
    return tuple(
        AppliedMigration(
            version=str(st.version),
            name=st.label,
            phase=st.phase,
            duration_seconds=round(
                (st.applied.duration_seconds or 0.0) if st.applied is not None else 0.0, 4
            ),
            reversible=bool(st.reversible),
        )
        for st in found
    )


def _migrations(s: ControllerSettings) -> tuple[str, Path]:
    if s.database_url is None or s.migrations_dir is None:  # pragma: no cover  # callers check
        raise BluegreenError("no migrations configured (rollout.migrations)")
    return s.database_url, s.migrations_dir


def _headline(finding: Any) -> str:
    headline = getattr(finding, "headline", None)
    return str(headline()) if callable(headline) else str(finding)


def _migration_logger(rollout: Rollout) -> Callable[[MigrationEvent], None]:
    bound = log.bind(rollout_id=rollout.id)

    def on_event(event: MigrationEvent) -> None:
        bound.info(event.name, detail=event.describe(), **event.fields())

    return on_event


async def _apply_stoppable(
    ctx: ExecutorContext,
    rollout: Rollout,
    phases: Sequence[str],
    stop: asyncio.Event,
    check: Callable[[], str | None] | None = None,
) -> tuple[migrations.ApplyResult | None, str | None, bool]:
    """Run ``apply`` in a child task; ``stop`` interrupts it between steps.

    Returns (result, setup error message, stopped). ``check`` is called when a
    migration starts (runner lock held); a message from it stops the run.
    """
    url, directory = _migrations(ctx.settings)
    s = ctx.settings
    on_event = _migration_logger(rollout)
    refused: list[str] = []
    safe_point = asyncio.Event()
    children: list[asyncio.Task[migrations.ApplyResult]] = []

    def hook(event: MigrationEvent) -> None:
        on_event(event)
        if isinstance(event, MigrationStarted) and check is not None:
            problem = check()
            if problem is not None:
                refused.append(problem)
                stop.set()
                # Cancelled at its next await: before the migration's first statement.
                for child in children:
                    child.cancel()
        if isinstance(event, StepFinished | MigrationFinished):
            safe_point.set()

    child = asyncio.create_task(
        migrations.apply(
            url,
            directory,
            phases=phases,
            allow_hazards=s.allow_hazards,
            options=s.run_options,
            on_event=hook,
            raise_on_failure=False,
        ),
        name=f"migrations rollout {rollout.id}",
    )
    children.append(child)
    stopper = asyncio.create_task(_stop_at_safe_point(child, stop, safe_point))
    try:
        await asyncio.wait({child})
    except asyncio.CancelledError:
        child.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await child
        raise
    finally:
        stopper.cancel()
    if child.cancelled():
        return None, refused[0] if refused else None, True
    exc = child.exception()
    if exc is not None:
        if isinstance(exc, BluegreenError):
            return None, str(exc), stop.is_set()
        raise exc
    return child.result(), refused[0] if refused else None, stop.is_set()


async def _stop_at_safe_point(
    child: asyncio.Task[Any], stop: asyncio.Event, safe_point: asyncio.Event
) -> None:
    """Once ``stop`` is set, cancel ``child`` after its current step (or a grace period)."""
    await stop.wait()
    safe_point.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(safe_point.wait(), CANCEL_GRACE)
    child.cancel()


async def run_migrations(
    ctx: ExecutorContext, action: RunMigrations, rollout: Rollout, stop: asyncio.Event
) -> MigrationsApplied | MigrationFailed | MigrationsCancelled:
    """Lint, then apply the pending expand/migrate migrations; stoppable by ``stop``."""
    s = ctx.settings
    if not s.migrations_configured:
        log.info("migrations_skipped", rollout_id=rollout.id, reason="no migrations configured")
        if stop.is_set():
            return MigrationsCancelled(())
        return MigrationsApplied(())
    try:
        result, problem, stopped = await _apply_stoppable(ctx, rollout, action.phases, stop)
    except (OSError, asyncpg.PostgresError) as exc:
        return MigrationFailed(f"cannot reach the database: {exc}", ())
    try:
        applied = await applied_for(ctx, rollout, action.phases)
    except (BluegreenError, OSError, asyncpg.PostgresError) as exc:
        log.warning("migration_history_unreadable", rollout_id=rollout.id, error=str(exc))
        applied = ()
    if stopped:
        return MigrationsCancelled(applied)
    if problem is not None:
        return MigrationFailed(problem, applied)
    assert result is not None  # noqa: S101  # no problem means a result
    if result.error is not None:
        hazards = "; ".join(_headline(h) for h in result.hazards)
        detail = str(result.error) + (f" ({hazards})" if hazards else "")
        return MigrationFailed(detail, applied)
    return MigrationsApplied(applied)


async def migrations_cancelled(ctx: ExecutorContext, rollout: Rollout) -> MigrationsCancelled:
    """CancelMigrations with nothing running: report what this rollout applied."""
    try:
        applied = await applied_for(ctx, rollout, EARLY_PHASES)
    except (BluegreenError, OSError, asyncpg.PostgresError) as exc:
        log.warning("migration_history_unreadable", rollout_id=rollout.id, error=str(exc))
        applied = ()
    return MigrationsCancelled(applied)


async def run_down_migrations(
    ctx: ExecutorContext, action: RunDownMigrations, rollout: Rollout
) -> DownMigrationsDone | DownMigrationsFailed:
    """Revert exactly ``action.versions`` (newest first), refusing if others are above them."""
    s = ctx.settings
    if not action.versions:
        return DownMigrationsDone(())
    if not s.migrations_configured:
        return DownMigrationsFailed("no migrations configured (rollout.migrations)", ())
    url, directory = _migrations(s)
    try:
        wanted = {int(v) for v in action.versions}
        target = min(wanted) - 1
        statuses = await migrations.status(url, directory, options=s.run_options)
        above = {st.version for st in statuses if st.applied is not None and st.version > target}
        if above != wanted:
            extra = sorted(above - wanted)
            return DownMigrationsFailed(
                f"migrations {', '.join(map(str, extra)) or 'none'} are applied above this "
                "rollout's; reverting would undo them too. Revert by hand with "
                "`bluegreen migrate down`",
                (),
            )
        result = await migrations.rollback(
            url,
            directory,
            to=target,
            options=s.run_options,
            on_event=_migration_logger(rollout),
            raise_on_failure=False,
        )
    except (BluegreenError, ValueError, OSError, asyncpg.PostgresError) as exc:
        return DownMigrationsFailed(str(exc), ())
    reverted = tuple(
        AppliedMigration(str(run.version), run.label, run.phase, round(run.seconds, 4), True)
        for run in result.runs
        if run.outcome is Outcome.ROLLED_BACK
    )
    if result.error is not None:
        return DownMigrationsFailed(str(result.error), reverted)
    return DownMigrationsDone(reverted)


async def idle_problem(ctx: ExecutorContext, colour: Colour) -> str | None:
    """Why ``colour`` is not idle (weight or requests in flight anywhere), or None."""
    doc = ctx.store.current
    weight = doc.weight_bp(colour)
    if weight:
        return f"{colour} still gets {weight / 100:g} % of the traffic"
    status = drain_status(await replica_traffic(ctx), colour, doc.version)
    if not status.drained:
        return f"{colour} is not drained ({'; '.join(status.waiting)})"
    return None


async def run_contract(
    ctx: ExecutorContext, action: RunContract, rollout: Rollout
) -> ContractApplied | ContractFailed | ContractRefused:
    """Check the old colour is idle, then apply the contract phase (checked again per file)."""
    s = ctx.settings
    try:
        # The record that started the contract is itself a new state version:
        # let every replica report it before judging their traffic, or a
        # heartbeat a few milliseconds old would refuse the contract.
        await ctx.store.wait_applied(
            ctx.store.current.version, rollout.options.confirm_timeout_seconds
        )
        problem = await idle_problem(ctx, action.idle_colour)
    except StateError as exc:
        problem = f"cannot read the replicas: {exc}"
    if problem is not None:
        return ContractRefused(problem)
    if not s.migrations_configured:
        return ContractApplied(())

    def check() -> str | None:
        # Runs with the migration lock held, before each file: no awaiting here, so
        # the state is the newest this process has seen (pushed to it by the store).
        weight = ctx.store.current.weight_bp(action.idle_colour)
        if weight:
            return f"{action.idle_colour} got {weight / 100:g} % of the traffic again"
        return None

    stop = asyncio.Event()
    try:
        result, message, stopped = await _apply_stoppable(
            ctx, rollout, CONTRACT_PHASES, stop, check
        )
    except (OSError, asyncpg.PostgresError) as exc:
        return ContractFailed(f"cannot reach the database: {exc}", ())
    try:
        applied = await applied_for(ctx, rollout, CONTRACT_PHASES)
    except (BluegreenError, OSError, asyncpg.PostgresError):
        applied = ()
    if stopped and message is not None:
        return ContractRefused(message)
    if message is not None:
        return ContractFailed(message, applied)
    if result is None or result.error is not None:
        return ContractFailed(str(result.error if result else "interrupted"), applied)
    return ContractApplied(applied)


# =========================================================================== smoke


async def smoke(
    ctx: ExecutorContext, action: RunSmoke, rollout: Rollout
) -> SmokePassed | SmokeFailed:
    """Smoke-test the target (and the live colour on the new schema)."""
    s = ctx.settings
    try:
        report = await run_smoke_action(
            action,
            s.smoke,
            s.servers,
            version=rollout.version,
            live_version=live_version_of(ctx.store.current, rollout.id),
            database_url=s.database_url,
            default_path=s.health.probes.path,
        )
    except BluegreenError as exc:
        return SmokeFailed((SmokeResult(action.colour, "smoke", False, str(exc)),))
    return report.event()


# =========================================================================== traffic


async def replica_traffic(ctx: ExecutorContext) -> list[ReplicaTraffic]:
    """Every live replica's applied version and traffic (this one's straight from its proxy)."""
    statuses = await ctx.store.replicas()
    result = []
    for st in statuses:
        if not st.alive:
            continue
        traffic: Traffic | None
        if ctx.proxy is not None and st.info.id == ctx.replica_id:
            traffic = traffic_of(ctx.proxy.stats_snapshot())
        else:
            traffic = traffic_from_extra(st.info.extra)
        result.append(ReplicaTraffic(st.info.id, st.info.applied_version, traffic))
    return result


async def wait_drained(ctx: ExecutorContext, action: WaitDrained, rollout: Rollout) -> Drained:
    """Wait until no live replica has a request in flight to the colour."""
    colour = action.colour
    bound = log.bind(rollout_id=rollout.id, colour=colour.value)
    last_report = 0.0
    while True:
        doc = ctx.store.current
        if doc.weight_bp(colour) == 0:
            try:
                status = drain_status(await replica_traffic(ctx), colour, doc.version)
            except StateError as exc:
                status = None
                bound.warning("drain_check_failed", error=str(exc))
            if status is not None and status.drained:
                bound.info("colour_drained")
                return Drained(colour)
            if status is not None and time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                bound.info("waiting_for_drain", waiting=list(status.waiting))
        await asyncio.sleep(DRAIN_POLL)


# =========================================================================== analysis


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    traffic: dict[str, Traffic]


async def _sample(ctx: ExecutorContext) -> _Sample:
    at = ctx.clock()
    traffic: dict[str, Traffic] = {}
    for r in await replica_traffic(ctx):
        if r.traffic is not None:
            traffic[r.id] = r.traffic
    if ctx.proxy is not None and ctx.replica_id is not None and ctx.replica_id not in traffic:
        traffic[ctx.replica_id] = traffic_of(ctx.proxy.stats_snapshot())
    return _Sample(at, traffic)


def _verdict_json(verdict: Verdict, run: AnalysisRun, at: float) -> dict[str, Any]:
    return {
        "at": at,
        "status": verdict.status.value,
        "reason": verdict.reason.value,
        "message": verdict.message,
        "candidate_error_rate": verdict.candidate_error_rate,
        "baseline_error_rate": verdict.baseline_error_rate,
        "candidate_p99_seconds": verdict.candidate_p99,
        "baseline_p99_seconds": verdict.baseline_p99,
        "measurements": run.measurements,
        "consecutive_failing": run.consecutive_failed,
        "failing_since": run.failing_since,
    }


async def analyse(
    ctx: ExecutorContext,
    action: StartAnalysis,
    rollout: Rollout,
    post: Callable[[Event], None],
) -> AnalysisFailed | None:
    """Judge the candidate every interval until it fails (runs until cancelled otherwise).

    A window's verdict is recorded at the *start* of the window, so
    ``failing_since`` is the earliest moment the failure can have begun and
    the detection time derived from it is an upper bound.
    """
    h = ctx.settings.health
    if not h.analysis_enabled:
        log.warning("analysis_disabled", rollout_id=rollout.id)
        return None
    bound = log.bind(rollout_id=rollout.id, candidate=action.candidate.value)
    run = AnalysisRun(h.analysis)
    loop = asyncio.get_running_loop()
    previous: _Sample | None = None
    next_at = loop.time()
    while True:
        try:
            current = await _sample(ctx)
        except StateError as exc:
            run, decision = run.observe_error(str(exc), at=ctx.clock())
            bound.warning("analysis_measurement_failed", error=str(exc))
        else:
            if previous is None:
                decision = Decision.CONTINUE
            else:
                windows = cluster_window(previous.traffic, current.traffic)
                prober = ctx.prober
                verdict = assess(
                    windows[action.candidate],
                    windows[action.baseline],
                    h.analysis,
                    candidate_probes=prober.summary(action.candidate) if prober else None,
                    baseline_probes=prober.summary(action.baseline) if prober else None,
                    candidate_colour=action.candidate,
                )
                run, decision = run.observe(verdict, at=previous.at)
                ctx.analysis.clear()
                ctx.analysis.update(_verdict_json(verdict, run, current.at))
                if verdict.status.value != "healthy":
                    bound.info(
                        "analysis_verdict",
                        status=verdict.status.value,
                        reason=verdict.reason.value,
                        detail=verdict.message,
                    )
            previous = current
        if decision is Decision.FAIL:
            assert run.reason is not None  # noqa: S101  # set with FAIL
            bound.warning("analysis_failed", reason=run.reason.value, detail=run.message)
            return AnalysisFailed(run.reason, run.message, run.failing_since)
        if decision is Decision.PAUSE:
            assert run.reason is not None  # noqa: S101  # set with PAUSE
            post(AnalysisInconclusive(run.reason, run.message))
        next_at += h.analysis_interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))


# =========================================================================== notifications


def notification_for(
    action: Notify, rollout: Rollout | None, green_bp: int, at: float
) -> Notification:
    """The webhook notification for a ``Notify`` action (weights as percent by colour)."""
    return Notification(
        fact=action.fact.value,
        message=action.message,
        at=at,
        rollout_id=action.rollout_id,
        version=rollout.version if rollout is not None else None,
        phase=action.phase.value,
        reason=str(action.reason) if action.reason is not None else None,
        target=rollout.target.value if rollout is not None else None,
        weights={"blue": (BASIS_POINTS - green_bp) / 100, "green": green_bp / 100},
    )
