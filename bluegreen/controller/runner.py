"""The rollout controller runner: leadership, persist-then-act, one timer, the actions.

Theory of operation
-------------------
Every ``bluegreen serve`` runs a :class:`RolloutController`. Two things happen
in it, and the pure :mod:`~bluegreen.controller.machine` decides everything:

**Operator commands, on any replica.** ``start``, ``pause``, ``resume``,
``promote``, ``abort`` and ``contract`` arriving at a replica's admin API go
through :meth:`RolloutController.command`: read the state document, apply
``transition`` to the stored record, compare-and-set the new record (with the
weights when the first action is ``SetWeights``: an abort's 0 % is stored
with the abort) and retry from a fresh read on conflict. An illegal command
raises :class:`~bluegreen.errors.IllegalTransitionError` (the API's 409).
The replica announces the command's ``Notify`` actions itself; every other
action is left to the leader.

**The leader, on exactly one replica.** A background task keeps trying
``store.acquire_leadership("controller")`` every ``rollout.leadership_retry``
seconds; the winner (a PostgreSQL advisory lock, or an ``flock``, both
released when the process dies) leads until its :class:`Leadership` is lost
or it stops. On taking over it calls ``resume(record, now)``, persists the
result and performs its actions: the bake goes on with the time left, a
confirmation is asked again, a fallback is finished; weights never jump.

The leader owns one queue, processed by one task, one item at a time:

* an **event** (the result of one of its actions, tagged with the rollout id
  it belongs to; events of another rollout are dropped):
  ``transition`` → compare-and-set the record (and weights) → perform the
  actions. On a conflict it re-reads; if someone else changed the record
  (an operator) it first reconciles with it, then applies the event to the
  fresh record. Stale answers are the machine's business: it ignores them.
* a **refresh** (the store pushed a document whose record this process did
  not write): *reconcile*, i.e. perform what ``resume`` says the stored
  record needs, without persisting anything (the replica that wrote the
  record already announced it). A record with another id supersedes the
  current rollout: every task of the old one is cancelled first.

Actions are idempotent "ensure" operations on named slots, so performing
them again on a reconcile never doubles work: one weights request (a new one
replaces an older one), one preflight, one smoke run, one migration job, one
analysis, one drain wait per colour, and **one timer** (each ``ScheduleTick``
replaces it; an early or spurious ``Tick`` is harmless). Each task posts its
result back to the queue as an event.

Replicas heartbeat their applied state version and their per-colour traffic
(``controller.stats``), fast while a rollout is active, so a step counts as
reached only when every live replica applied it, and a colour as drained only
when no live replica has a request in flight to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from bluegreen.controller import executors as ex
from bluegreen.controller import records
from bluegreen.controller.conditions import Fact
from bluegreen.controller.executors import ControllerSettings, ExecutorContext, LocalProxy
from bluegreen.controller.machine import (
    Action,
    Actions,
    CancelMigrations,
    Event,
    Notify,
    Phase,
    Rollout,
    RolloutOptions,
    RunContract,
    RunDownMigrations,
    RunMigrations,
    RunPreflight,
    RunSmoke,
    ScheduleTick,
    SetWeights,
    Start,
    StartAnalysis,
    Step,
    StopAnalysis,
    Tick,
    WaitDrained,
    resume,
    transition,
)
from bluegreen.controller.preflight import (
    Attestation,
    PreflightReport,
    run_preflight,
    validate_attestations,
)
from bluegreen.errors import (
    IllegalTransitionError,
    RolloutRecordError,
    StateConflictError,
    StateError,
)
from bluegreen.health.probes import HealthProber
from bluegreen.metrics import RolloutGaugeView, RolloutMetrics
from bluegreen.notify import Notifier
from bluegreen.routing import BASIS_POINTS, Colour
from bluegreen.state.leader import Leadership
from bluegreen.state.model import StateDocument
from bluegreen.state.store import StateStore

log = structlog.get_logger("bluegreen.controller")

LEADERSHIP_NAME: Final = "controller"
COMMIT_ATTEMPTS: Final = 20
HEARTBEAT_ROLE_KEY: Final = "controller"


@dataclass(frozen=True, slots=True)
class _Posted:
    rollout_id: int
    event: Event


@dataclass(frozen=True, slots=True)
class _Refresh:
    pass


_Item = _Posted | _Refresh


@dataclass
class _Slot:
    task: asyncio.Task[None]
    rollout_id: int
    key: object


class RolloutController:
    """Operator commands on any replica; the leader drives the rollout (see module doc).

    ``proxy`` (this process's proxy: its traffic numbers), ``prober`` (the
    active health prober) and ``replica`` (for the leader marker in its
    heartbeat) may be attached later with :meth:`attach`. ``lead=False``
    makes a controller that takes commands but never leads (tests, tools).
    """

    def __init__(
        self,
        store: StateStore,
        settings: ControllerSettings,
        *,
        actor: str | None = None,
        proxy: LocalProxy | None = None,
        prober: HealthProber | None = None,
        replica_id: str | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        lead: bool = True,
    ) -> None:
        self.store = store
        self.settings = settings
        self.actor = actor or f"controller@{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self.lead = lead
        self.notifier = notifier if notifier is not None else Notifier(settings.notifications)
        self.ctx = ExecutorContext(
            store=store,
            settings=settings,
            actor=self.actor,
            clock=clock,
            proxy=proxy,
            prober=prober,
            replica_id=replica_id,
        )
        self.metrics = RolloutMetrics(
            [p.value for p in Phase], self._gauge_view, lambda: self.leading
        )
        self.replica_extra: dict[str, object] | None = None
        self.leading = False
        self.leaderships = 0  # how many times this process took the lead (tests, logs)
        self._lead_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._queue: asyncio.Queue[_Item] | None = None
        self._doc: StateDocument | None = None
        self._rollout: Rollout | None = None
        self._slots: dict[str, _Slot] = {}
        self._migration_stop: asyncio.Event | None = None
        self._became_leader = asyncio.Event()

    # ----------------------------------------------------------------- wiring

    def attach(
        self,
        *,
        proxy: LocalProxy | None = None,
        prober: HealthProber | None = None,
        replica_id: str | None = None,
        replica_extra: dict[str, object] | None = None,
        metrics_url: str | None = None,
    ) -> None:
        """Give the controller this process's proxy, prober and replica (after they start)."""
        if proxy is not None:
            self.ctx.proxy = proxy
        if prober is not None:
            self.ctx.prober = prober
        if replica_id is not None:
            self.ctx.replica_id = replica_id
        if replica_extra is not None:
            self.replica_extra = replica_extra
            replica_extra[HEARTBEAT_ROLE_KEY] = "leader" if self.leading else "standby"
        if metrics_url is not None and self.settings.metrics_url is None:
            self.settings = dataclasses.replace(self.settings, metrics_url=metrics_url)
            self.ctx.settings = self.settings

    async def start(self) -> None:
        """Start the notifier and (unless ``lead=False``) the leadership loop."""
        await self.notifier.start()
        if self.lead and self._lead_task is None:
            self._lead_task = asyncio.create_task(self._lead_forever(), name="rollout-controller")

    async def step_down(self) -> None:
        """Stop leading and trying to lead (running actions are cancelled); fast."""
        self._stopping.set()
        if self._lead_task is not None:
            self._lead_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lead_task
            self._lead_task = None
        await self._cancel_all()

    async def stop(self) -> None:
        """Step down, then flush the notifications still queued (``close_timeout``)."""
        await self.step_down()
        await self.notifier.close()

    async def wait_leading(self, timeout: float) -> bool:  # noqa: ASYNC109  # a deadline
        """True once this process leads (for tests)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._became_leader.wait(), timeout)
        return self.leading

    # ----------------------------------------------------------------- reading

    def current(self) -> tuple[StateDocument, Rollout | None]:
        """The newest document this process has seen and its rollout record."""
        doc = self.store.current
        return doc, records.decode(doc)

    async def view(self) -> dict[str, Any]:
        """What ``GET /api/v1/rollout`` answers."""
        doc = await self.store.read()
        rollout = records.decode(doc)
        body = records.rollout_view(doc, rollout, self.clock())
        leader = None
        try:
            for st in await self.store.replicas():
                if st.alive and st.info.extra.get(HEARTBEAT_ROLE_KEY) == "leader":
                    leader = st.info.id
        except StateError:
            leader = None
        if self.leading and self.ctx.replica_id is not None:
            leader = self.ctx.replica_id
        body["leader"] = leader
        body["analysis"] = dict(self.ctx.analysis) if self.leading and self.ctx.analysis else None
        return body

    def _gauge_view(self) -> RolloutGaugeView | None:
        try:
            rollout = records.decode(self.store.current)
        except (StateError, RolloutRecordError):
            return None
        if rollout is None:
            return None
        return RolloutGaugeView(
            rollout.phase.value, rollout.step_index + 1, rollout.target_bp / BASIS_POINTS
        )

    # ----------------------------------------------------------------- commands (any replica)

    def start_event(
        self,
        doc: StateDocument,
        version: str,
        *,
        steps: Sequence[Step] | None = None,
        options: RolloutOptions | None = None,
    ) -> Start:
        """The Start event for ``version`` with the config's steps and options as defaults."""
        return Start(
            version=version,
            steps=tuple(steps) if steps is not None else self.settings.steps,
            options=options if options is not None else self.settings.options,
            salt=secrets.token_hex(8),
            current_green_bp=doc.green_weight_bp,
        )

    async def start_rollout(
        self,
        version: str,
        *,
        steps: Sequence[Step] | None = None,
        options: RolloutOptions | None = None,
        attestations: Sequence[Attestation] = (),
    ) -> tuple[StateDocument, Rollout]:
        """Start a rollout of ``version``; raises IllegalTransitionError when one is active."""
        validate_attestations(self.settings.preflight, [a.name for a in attestations])

        def make(doc: StateDocument, previous: Rollout | None) -> Event:
            return self.start_event(doc, version, steps=steps, options=options)

        def detail(previous: Rollout | None) -> dict[str, Any]:
            extra: dict[str, Any] = {
                "attestations": [
                    {"name": a.name, "by": a.by, "at": a.at, "note": a.note} for a in attestations
                ]
            }
            if previous is not None and previous.phase is Phase.PROMOTED:
                extra["live_version"] = previous.version
            return extra

        return await self.command(make, detail=detail)

    async def command(
        self,
        make: Callable[[StateDocument, Rollout | None], Event],
        *,
        detail: Callable[[Rollout | None], Mapping[str, Any]] | None = None,
    ) -> tuple[StateDocument, Rollout]:
        """Apply an operator event to the stored record with compare-and-set.

        ``make(doc, record)`` builds the event from what is stored. Raises
        IllegalTransitionError (the record is unchanged) or StateError.
        """
        conflict: StateConflictError | None = None
        for _ in range(COMMIT_ATTEMPTS):
            doc = await self.store.read()
            rollout = records.decode(doc)
            now = self.clock()
            event = make(doc, rollout)
            new, actions = transition(rollout, event, now)
            if new is rollout:
                return doc, new
            extra = detail(rollout) if detail is not None else None
            new_doc = records.next_document(
                doc, rollout, new, actions, self.actor, _dt(now), extra_detail=extra
            )
            try:
                stored = await self.store.compare_and_set(doc.version, new_doc)
            except StateConflictError as exc:
                conflict = exc
                continue
            log.info(
                "rollout_command",
                rollout_id=new.id,
                command=type(event).__name__.lower(),
                phase=new.phase.value,
                version=stored.version,
            )
            for action in actions:
                if isinstance(action, Notify):
                    self._announce(action, new, stored)
            return stored, new
        assert conflict is not None  # noqa: S101  # the loop ran
        raise conflict

    async def preflight(
        self, version: str | None, attestations: Sequence[Attestation] = ()
    ) -> PreflightReport:
        """Run the checklist now for the next rollout (``version`` or ``next``)."""
        doc = await self.store.read()
        target = next_target(doc)
        inputs = ex.preflight_inputs(self.ctx, version or "next", target, attestations)
        return await run_preflight(inputs, store=self.store, actor=self.actor, clock=self.clock)

    # ----------------------------------------------------------------- announcing

    def _announce(self, action: Notify, rollout: Rollout | None, doc: StateDocument) -> None:
        """Log, count and post one fact (never blocks)."""
        log.info(
            action.fact.value,
            rollout_id=action.rollout_id,
            phase=action.phase.value,
            detail=action.message,
            reason=str(action.reason) if action.reason is not None else None,
        )
        fb = rollout.fallback if rollout is not None else None
        if action.fact is Fact.FALLBACK_STARTED:
            self.metrics.rollback(str(action.reason or "unknown"))
            if fb is not None:
                self.metrics.detection.observe(fb.detection_seconds)
        elif action.fact is Fact.FALLBACK_WEIGHTS_ZERO and fb is not None:
            seconds = fb.fallback_seconds
            if seconds is not None:
                self.metrics.fallback.observe(seconds)
        self.notifier.notify(
            ex.notification_for(action, rollout, doc.green_weight_bp, self.clock())
        )

    # ----------------------------------------------------------------- leadership

    def _set_leading(self, leading: bool) -> None:
        self.leading = leading
        if self.replica_extra is not None:
            self.replica_extra[HEARTBEAT_ROLE_KEY] = "leader" if leading else "standby"
        if leading:
            self.leaderships += 1
            self._became_leader.set()
        else:
            self._became_leader.clear()

    async def _lead_forever(self) -> None:
        retry = self.settings.leadership_retry
        while not self._stopping.is_set():
            leadership: Leadership | None = None
            try:
                leadership = await self.store.acquire_leadership(LEADERSHIP_NAME)
            except StateError as exc:
                log.warning("leadership_attempt_failed", error=str(exc))
            if leadership is None:
                await asyncio.sleep(retry)
                continue
            self._set_leading(True)
            log.info("controller_leading", actor=self.actor, replica=self.ctx.replica_id)
            try:
                await self._lead(leadership)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller_failed", actor=self.actor)
            finally:
                self._set_leading(False)
                await self._cancel_all()
                with contextlib.suppress(Exception):
                    await leadership.release()
                log.info("controller_standing_down", actor=self.actor)
            await asyncio.sleep(retry)

    async def _lead(self, leadership: Leadership) -> None:
        self._queue = asyncio.Queue()
        unsubscribe = self.store.subscribe(self._on_document)
        lost = asyncio.ensure_future(leadership.lost.wait())
        try:
            await self._take_over()
            while True:
                getter = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({getter, lost}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    log.warning("controller_leadership_lost", actor=self.actor)
                    return
                await self._handle(getter.result())
        finally:
            lost.cancel()
            unsubscribe()
            self._queue = None

    def _on_document(self, doc: StateDocument) -> None:
        """Store callback: a newer document; a record we did not write needs a reconcile."""
        queue = self._queue
        if queue is None or self._doc is None:
            return
        if doc.version > self._doc.version and doc.rollout != self._doc.rollout:
            queue.put_nowait(_Refresh())

    def _post(self, rollout_id: int, event: Event) -> None:
        queue = self._queue
        if queue is not None:
            queue.put_nowait(_Posted(rollout_id, event))

    async def _take_over(self) -> None:
        """Resume the stored rollout: persist ``resume``'s record, perform its actions."""
        for _ in range(COMMIT_ATTEMPTS):
            doc = await self.store.read()
            try:
                rollout = records.decode(doc)
            except RolloutRecordError as exc:
                log.error("rollout_record_unreadable", error=str(exc))
                self._doc, self._rollout = doc, None
                return
            now = self.clock()
            new, actions = resume(rollout, now)
            if new is None or new is rollout:
                self._doc, self._rollout = doc, new
                await self._perform(actions)
                return
            new_doc = records.next_document(doc, rollout, new, actions, self.actor, _dt(now))
            try:
                stored = await self.store.compare_and_set(doc.version, new_doc)
            except StateConflictError:
                continue
            self._doc, self._rollout = stored, new
            log.info("rollout_resumed", rollout_id=new.id, phase=new.phase.value)
            await self._perform(actions)
            return
        raise StateConflictError(-1, -1)

    async def _handle(self, item: _Item) -> None:
        if isinstance(item, _Refresh):
            doc = self.store.current
            if self._doc is not None and doc.version > self._doc.version:
                await self._adopt(doc)
            return
        current = self._rollout
        if current is None or current.id != item.rollout_id:
            log.debug("rollout_event_dropped", event=type(item.event).__name__)
            return
        await self._commit(item.event)

    async def _adopt(self, doc: StateDocument) -> None:
        """Make ``doc`` ours; when its record is someone else's, do what it needs."""
        if self._doc is not None and doc.rollout == self._doc.rollout:
            self._doc = doc
            return
        try:
            rollout = records.decode(doc)
        except RolloutRecordError as exc:
            log.error("rollout_record_unreadable", error=str(exc))
            await self._cancel_all()
            self._doc, self._rollout = doc, None
            return
        previous = self._rollout
        if rollout is None or previous is None or rollout.id != previous.id:
            await self._cancel_all()
        self._doc, self._rollout = doc, rollout
        if rollout is None:
            return
        if not rollout.analysis_running:
            await self._stop_slot("analysis")
        _, actions = resume(rollout, self.clock())
        log.info("rollout_reconciled", rollout_id=rollout.id, phase=rollout.phase.value)
        await self._perform(tuple(a for a in actions if not isinstance(a, Notify)))

    async def _commit(self, event: Event) -> None:
        for _ in range(COMMIT_ATTEMPTS):
            doc, current = self._doc, self._rollout
            assert doc is not None  # noqa: S101  # set on taking over
            now = self.clock()
            try:
                new, actions = transition(current, event, now)
            except IllegalTransitionError as exc:
                log.info("rollout_event_ignored", event=type(event).__name__, detail=str(exc))
                return
            if new is current:
                await self._perform(actions)
                return
            new_doc = records.next_document(doc, current, new, actions, self.actor, _dt(now))
            try:
                stored = await self.store.compare_and_set(doc.version, new_doc)
            except StateConflictError:
                await self._adopt(await self.store.read())
                continue
            self._doc, self._rollout = stored, new
            await self._perform(actions)
            return
        log.error("rollout_commit_gave_up", event=type(event).__name__)

    # ----------------------------------------------------------------- actions

    async def _perform(self, actions: Actions) -> None:
        rollout = self._rollout
        for action in actions:
            if isinstance(action, Notify):
                assert self._doc is not None  # noqa: S101  # set before performing
                self._announce(action, rollout, self._doc)
                continue
            if rollout is None:  # pragma: no cover  # actions always belong to a rollout
                continue
            await self._start(action, rollout)

    async def _start(self, action: Action, rollout: Rollout) -> None:
        ctx = self.ctx
        match action:
            case SetWeights():
                self._ensure(
                    "weights", rollout, action, ex.set_weights(ctx, action, rollout), replace=True
                )
            case ScheduleTick():
                self._ensure("timer", rollout, action, self._timer(action.at), replace=True)
            case RunPreflight():
                self._ensure("preflight", rollout, action, ex.preflight(ctx, action, rollout))
            case RunMigrations():
                stop = asyncio.Event()
                if self._ensure(
                    "migrations", rollout, action, ex.run_migrations(ctx, action, rollout, stop)
                ):
                    self._migration_stop = stop
            case CancelMigrations():
                slot = self._slots.get("migrations")
                if (
                    slot is not None
                    and not slot.task.done()
                    and isinstance(slot.key, RunMigrations)
                ):
                    if self._migration_stop is not None:
                        self._migration_stop.set()
                else:
                    self._ensure(
                        "migrations", rollout, action, ex.migrations_cancelled(ctx, rollout)
                    )
            case RunSmoke():
                self._ensure("smoke", rollout, action, ex.smoke(ctx, action, rollout))
            case StartAnalysis():
                post = self._poster(rollout.id)
                self._ensure("analysis", rollout, action, ex.analyse(ctx, action, rollout, post))
            case StopAnalysis():
                await self._stop_slot("analysis")
            case WaitDrained():
                name = f"drain:{action.colour.value}"
                self._ensure(name, rollout, action, ex.wait_drained(ctx, action, rollout))
            case RunDownMigrations():
                self._ensure(
                    "migrations", rollout, action, ex.run_down_migrations(ctx, action, rollout)
                )
            case RunContract():
                self._ensure("migrations", rollout, action, ex.run_contract(ctx, action, rollout))
            case Notify():  # pragma: no cover  # handled by _perform
                pass

    def _poster(self, rollout_id: int) -> Callable[[Event], None]:
        return lambda event: self._post(rollout_id, event)

    def _ensure(
        self,
        name: str,
        rollout: Rollout,
        key: object,
        work: Any,
        *,
        replace: bool = False,
    ) -> bool:
        """Run ``work`` in slot ``name`` unless the same action already runs there.

        Returns whether it started. ``replace``: a different action replaces the
        running one; otherwise a running action of the same rollout is kept.
        """
        slot = self._slots.get(name)
        running = slot is not None and not slot.task.done()
        if (
            running
            and slot is not None
            and slot.rollout_id == rollout.id
            and (slot.key == key or not replace)
        ):
            work.close()
            return False
        if slot is not None and not slot.task.done():
            slot.task.cancel()
        task = asyncio.create_task(self._run(name, rollout.id, work), name=f"rollout {name}")
        self._slots[name] = _Slot(task, rollout.id, key)
        return True

    async def _run(self, name: str, rollout_id: int, work: Any) -> None:
        try:
            event = await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rollout_action_failed", action=name, rollout_id=rollout_id)
            return
        if event is not None:
            self._post(rollout_id, event)

    async def _timer(self, at: float) -> Tick:
        await asyncio.sleep(max(0.0, at - self.clock()))
        return Tick()

    async def _stop_slot(self, name: str) -> None:
        slot = self._slots.pop(name, None)
        if slot is not None and not slot.task.done():
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await slot.task

    async def _cancel_all(self) -> None:
        for name in list(self._slots):
            await self._stop_slot(name)
        self._migration_stop = None
        self.ctx.analysis.clear()


def next_target(doc: StateDocument) -> Colour:
    """The colour the next rollout ramps up (as Start decides it from the weights)."""
    if doc.green_weight_bp == 0:
        return Colour.GREEN
    if doc.green_weight_bp == BASIS_POINTS:
        return Colour.BLUE
    return doc.live.other


def _dt(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)
