"""Preflight: the seed's pre-production checklist, checked before every rollout starts.

The I/O shell behind the controller's ``RunPreflight`` action and
``bluegreen rollout preflight``. Each question of the seed's "Checklist de
Zero-Downtime" becomes an item that is checked, not asked:

=============================  =====================================================
item                           how it is checked
=============================  =====================================================
migrations_history             applied files unchanged, no run left failed/unfinished
migrations_lint                the linter on this rollout's pending migrations
migrations_reversible          each pending file has a down section or says
                               ``-- bluegreen:irreversible <reason>``
expand_backward_compatible     no drop/rename/truncate/NOT NULL without default in
                               expand or migrate files (the old code still runs)
health_checks_implemented      every server answers the probe path (not 404/405/501)
colours_healthy                every server of both colours passes the probe
smoke_tests_configured         smoke checks exist for the target; their command
                               exists and their SQL checks have a database
automatic_rollback_configured  health analysis is enabled (with its limits)
monitoring_active              the metrics endpoint answers with metrics
notifications_configured       at least one webhook is told about the rollout
backup_recent                  the configured backup check command exits 0
state_store_writable           a history entry recording this preflight is written
<attestation names>            an operator attested it (staging tested, runbook...)
=============================  =====================================================

Smoke tests themselves are not run here: the target's new code may need the
schema its expand migrations create, so they run in the ``smoke`` phase,
after the migrations (see :mod:`bluegreen.controller.machine`). Preflight
only checks that they are configured and can run.

Items are data (:class:`PreflightItem`: name, ok, reason, required). An item
set to ``warn`` in ``preflight.items`` is shown but does not block; ``skip``
hides its check. Checks run concurrently, each bounded by
``preflight.timeout``; the state-store write comes last and records the
results and who attested what (a history entry ``preflight_checked``: a real
write, because ``store.update`` skips a write that changes nothing).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog

from bluegreen.controller.machine import CheckItem, PreflightFailed, PreflightPassed
from bluegreen.controller.smoke import run_command
from bluegreen.errors import MigrationError, StateError, UsageError
from bluegreen.health.probes import ProbeResult, probe_once, probe_session
from bluegreen.migrations import runner as migration_runner
from bluegreen.migrations.files import Phase as MigrationPhase
from bluegreen.migrations.plan import RUNNABLE_STATES, MigrationStatus, Severity, problems
from bluegreen.rollout_config import (
    PREFLIGHT_ITEMS,
    CheckKind,
    CommandCheck,
    HealthConfig,
    ItemMode,
    NotificationsConfig,
    PreflightConfig,
    SmokeConfig,
    SmokeRole,
    SqlCheck,
)
from bluegreen.routing import Colour
from bluegreen.state.model import with_history
from bluegreen.state.store import StateStore

log = structlog.get_logger("bluegreen.preflight")

HISTORY_KIND: Final = "preflight_checked"
MAX_LISTED: Final = 3  # findings or servers named in one reason; the rest are counted

# Lint rules whose findings mean the *old* code, still serving traffic, breaks:
# the seed's "never-breaking changes" (remove or rename columns, incompatible
# types, NOT NULL without default) plus TRUNCATE and renames of tables and enums.
BACKWARD_INCOMPATIBLE_RULES: Final = frozenset(
    {
        "ban-drop-column",
        "ban-drop-table",
        "ban-truncate",
        "ban-rename-column",
        "ban-rename-table",
        "ban-rename-enum-value",
        "ban-rewriting-type-change",
        "require-default-for-not-null-column",
    }
)


# =========================================================================== values


@dataclass(frozen=True, slots=True)
class Attestation:
    """An operator's word that a checklist item no machine can check is done."""

    name: str
    by: str
    at: float  # epoch seconds
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "by": self.by, "at": _iso(self.at), "note": self.note}


@dataclass(frozen=True, slots=True)
class PreflightItem:
    """One checklist item: ✓ or ✗ with the reason. ``required`` items block the start."""

    name: str
    title: str
    ok: bool
    reason: str
    required: bool = True
    skipped: bool = False
    kind: str = "check"  # "check" or "attestation"
    link: str | None = None
    attested_by: str | None = None

    @property
    def blocking(self) -> bool:
        """A required item that failed."""
        return self.required and not self.ok

    @property
    def mark(self) -> str:
        """✓ passed, ✗ failed and required, ! failed but only a warning, - skipped."""
        if self.skipped:
            return "-"
        if self.ok:
            return "✓"
        return "✗" if self.required else "!"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (rollout record, ``--output json``)."""
        return {
            "name": self.name,
            "title": self.title,
            "ok": self.ok,
            "reason": self.reason,
            "required": self.required,
            "skipped": self.skipped,
            "kind": self.kind,
            "link": self.link,
            "attested_by": self.attested_by,
        }

    def to_check_item(self) -> CheckItem:
        """The controller's record of this item."""
        detail = self.reason
        if not self.ok and not self.required:
            detail += " (warning only)"
        return CheckItem(self.name, self.ok, detail)


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """Every item, in checklist order; ``ok`` when no required item failed."""

    version: str
    target: Colour
    items: tuple[PreflightItem, ...]
    attestations: tuple[Attestation, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no required item failed."""
        return not any(item.blocking for item in self.items)

    @property
    def blocking(self) -> tuple[PreflightItem, ...]:
        """Required items that failed."""
        return tuple(i for i in self.items if i.blocking)

    @property
    def warnings(self) -> tuple[PreflightItem, ...]:
        """Items that failed but do not block."""
        return tuple(i for i in self.items if not i.ok and not i.required)

    def item(self, name: str) -> PreflightItem:
        """The item called ``name`` (``KeyError`` if absent)."""
        for i in self.items:
            if i.name == name:
                return i
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "version": self.version,
            "target": self.target.value,
            "seconds": round(self.seconds, 3),
            "items": [i.to_json() for i in self.items],
            "attestations": [a.to_json() for a in self.attestations],
        }

    def event(self) -> PreflightPassed | PreflightFailed:
        """The event for the rollout controller."""
        items = tuple(i.to_check_item() for i in self.items)
        return PreflightPassed(items) if self.ok else PreflightFailed(items)

    def lines(self) -> list[str]:
        """The ✓/✗ table for people, one line per item, then the verdict."""
        width = max((len(i.name) for i in self.items), default=0)
        out = []
        for i in self.items:
            note = "" if i.ok or i.required or i.skipped else "warning: "
            link = f" ({i.link})" if i.link and not i.ok else ""
            out.append(f"{i.mark} {i.name:<{width}}  {note}{i.reason}{link}")
        verdict = (
            f"preflight passed for {self.version} -> {self.target}"
            if self.ok
            else f"preflight failed: {', '.join(i.name for i in self.blocking)}"
        )
        if self.warnings:
            verdict += f" ({len(self.warnings)} warning(s))"
        out.append(verdict)
        return out


@dataclass(frozen=True, slots=True)
class PreflightInputs:
    """What a preflight looks at. ``servers`` maps each colour to its ``host:port`` servers."""

    version: str
    target: Colour
    servers: Mapping[Colour, Sequence[str]]
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    migrations_dir: Path | None = None
    database_url: str | None = None
    allow_hazards: frozenset[str] = frozenset()
    metrics_url: str | None = None  # used when preflight.metrics_url is not set
    attestations: tuple[Attestation, ...] = ()


def validate_attestations(config: PreflightConfig, names: Sequence[str]) -> None:
    """Refuse attestation names that are not configured (a typo must not pass silently)."""
    known = {a.name for a in config.attestations}
    unknown = [n for n in names if n not in known]
    if unknown:
        listed = ", ".join(sorted(known)) or "none are configured (preflight.attestations)"
        raise UsageError(f"unknown attestation {unknown[0]!r}; known attestations: {listed}")


# =========================================================================== entry point


async def run_preflight(
    inputs: PreflightInputs,
    *,
    store: StateStore | None = None,
    actor: str = "bluegreen-preflight",
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] = time.time,
) -> PreflightReport:
    """Run the checklist for a rollout of ``inputs.version`` to ``inputs.target``.

    Never raises for a failing item (its reason says why); raises
    :class:`~bluegreen.errors.UsageError` for an attestation that is not
    configured. ``store``: the state store to prove writable (and to record
    the results in). ``session``: a shared aiohttp session.
    """
    validate_attestations(inputs.preflight, [a.name for a in inputs.attestations])
    started = time.monotonic()
    own = session is None
    if session is None:
        session = probe_session(inputs.health.probes)
    cfg = inputs.preflight
    try:
        # Read once, used by the migration items and by the health items (the
        # target may wait for its schema).
        statuses = asyncio.ensure_future(_load_statuses(inputs))
        groups: list[tuple[tuple[str, ...], Awaitable[list[PreflightItem]]]] = [
            (_MIGRATION_ITEMS, _migration_items(inputs, statuses)),
            (_HEALTH_ITEMS, _health_items(inputs, session, statuses)),
            (("monitoring_active",), _monitoring_item(inputs, session)),
            (("backup_recent",), _backup_item(inputs)),
        ]
        found = await asyncio.gather(
            *(_bounded(names, work, cfg.timeout) for names, work in groups)
        )
    finally:
        if own:
            await session.close()
    by_name = {item.name: item for items in found for item in items}
    by_name["smoke_tests_configured"] = _smoke_item(inputs)
    by_name["automatic_rollback_configured"] = _rollback_item(inputs)
    by_name["notifications_configured"] = _notifications_item(inputs)
    attested = _attestation_items(inputs)
    draft = [_apply_mode(by_name[n], cfg) for n in PREFLIGHT_ITEMS if n != "state_store_writable"]
    store_item = await _store_item(inputs, [*draft, *attested], store, actor, clock)
    items = (*draft, _apply_mode(store_item, cfg), *attested)
    report = PreflightReport(
        inputs.version, inputs.target, items, inputs.attestations, time.monotonic() - started
    )
    log.info(
        "preflight_finished",
        version=inputs.version,
        target=inputs.target.value,
        ok=report.ok,
        failed=[i.name for i in report.blocking],
        warnings=[i.name for i in report.warnings],
    )
    return report


def _item(name: str, ok: bool, reason: str, **extra: Any) -> PreflightItem:
    return PreflightItem(name, PREFLIGHT_ITEMS.get(name, name), ok, reason, **extra)


def _skipped(name: str, reason: str) -> PreflightItem:
    return _item(name, True, reason, required=False, skipped=True)


def _apply_mode(item: PreflightItem, cfg: PreflightConfig) -> PreflightItem:
    mode = cfg.mode(item.name)
    if mode is ItemMode.SKIP:
        return replace(
            item, ok=True, skipped=True, required=False,
            reason=f"skipped (preflight.items.{item.name}: skip)",
        )  # fmt: skip
    if mode is ItemMode.WARN:
        return replace(item, required=False)
    return item


async def _bounded(
    names: tuple[str, ...],
    work: Awaitable[list[PreflightItem]],
    timeout: float,  # noqa: ASYNC109  # each group gets the preflight timeout
) -> list[PreflightItem]:
    try:
        async with asyncio.timeout(timeout):
            return await work
    except TimeoutError:
        return [
            _item(n, False, f"did not finish within {timeout:g} s (preflight.timeout)")
            for n in names
        ]


def _listed(texts: Sequence[str], *, noun: str = "more") -> str:
    shown = "; ".join(texts[:MAX_LISTED])
    rest = len(texts) - MAX_LISTED
    return f"{shown}; and {rest} {noun}" if rest > 0 else shown


# =========================================================================== migrations

_MIGRATION_ITEMS: Final = (
    "migrations_history",
    "migrations_lint",
    "migrations_reversible",
    "expand_backward_compatible",
)


_NO_MIGRATIONS_DIR: Final = "no migrations directory configured"


async def _load_statuses(inputs: PreflightInputs) -> list[MigrationStatus] | str:
    """Every migration's status, or why it cannot be read."""
    directory, url = inputs.migrations_dir, inputs.database_url
    if directory is None:
        return _NO_MIGRATIONS_DIR
    if not url:
        return "no database URL to compare the migration files with; set DATABASE_URL"
    try:
        return await migration_runner.status(url, directory)
    except (MigrationError, UsageError) as exc:
        return str(exc)


def _pending(statuses: Sequence[MigrationStatus]) -> list[MigrationStatus]:
    return [s for s in statuses if s.state in RUNNABLE_STATES and s.file is not None]


async def _migration_items(
    inputs: PreflightInputs, loading: Awaitable[list[MigrationStatus] | str]
) -> list[PreflightItem]:
    statuses = await loading
    if statuses == _NO_MIGRATIONS_DIR:
        return [_skipped(n, _NO_MIGRATIONS_DIR) for n in _MIGRATION_ITEMS]
    if isinstance(statuses, str):
        return [_item(n, False, statuses) for n in _MIGRATION_ITEMS]
    pending = _pending(statuses)
    history = _history_item(statuses)
    if not pending:
        none = "no pending migrations"
        rest = [_item(n, True, none) for n in _MIGRATION_ITEMS[1:]]
        return [history, *rest]
    return [history, *_pending_items(statuses, pending, inputs.allow_hazards)]


def _history_item(statuses: Sequence[MigrationStatus]) -> PreflightItem:
    found = problems(statuses)
    errors = [p.message for p in found if p.severity is Severity.ERROR]
    if errors:
        return _item("migrations_history", False, _listed(errors))
    applied = sum(1 for s in statuses if s.applied is not None)
    reason = f"{applied} applied migration(s) unchanged"
    warnings = [p.message for p in found if p.severity is not Severity.ERROR]
    if warnings:
        reason += f"; note: {_listed(warnings)}"
    return _item("migrations_history", True, reason)


def _pending_items(
    statuses: Sequence[MigrationStatus],
    pending: Sequence[MigrationStatus],
    allowed: frozenset[str],
) -> list[PreflightItem]:
    from bluegreen.migrations.lint.engine import lint_migrations

    files = [s.file for s in statuses if s.file is not None]
    labels = ", ".join(s.label for s in pending)
    try:
        findings = lint_migrations(files, only={s.version for s in pending})
    except MigrationError as exc:  # a file the parser cannot read
        lint = _item("migrations_lint", False, str(exc))
        compat = _item("expand_backward_compatible", False, "cannot lint: " + str(exc))
        return [lint, _reversible_item(pending), compat]
    blocking = [f for f in findings if f.rule_id not in allowed]
    accepted = sorted({f.rule_id for f in findings if f.rule_id in allowed})
    if blocking:
        lint = _item(
            "migrations_lint",
            False,
            f"{len(blocking)} hazard(s): {_listed([f.headline() for f in blocking])}. "
            "Run `bluegreen migrate lint` for the safe alternative of each",
        )
    else:
        note = f"; accepted hazards: {', '.join(accepted)}" if accepted else ""
        lint = _item("migrations_lint", True, f"{len(pending)} pending clean ({labels}){note}")

    early = {s.file.path.as_posix() for s in pending if s.file is not None and _runs_early(s)}
    breaking = [
        f
        for f in findings
        if f.rule_id in BACKWARD_INCOMPATIBLE_RULES
        and f.rule_id not in allowed
        and Path(f.path).as_posix() in early
    ]
    late = sum(1 for s in pending if not _runs_early(s))
    after = f"; {late} contract migration(s) run only after promotion" if late else ""
    if breaking:
        compat = _item(
            "expand_backward_compatible",
            False,
            f"the live version would break: {_listed([f.headline() for f in breaking])}. "
            "Move destructive changes to a contract migration (it runs after promotion)",
        )
    else:
        compat = _item(
            "expand_backward_compatible",
            True,
            f"{len(early)} expand/migrate migration(s) keep the old code working{after}",
        )
    return [lint, _reversible_item(pending), compat]


def _runs_early(s: MigrationStatus) -> bool:
    return s.phase in (MigrationPhase.EXPAND.value, MigrationPhase.MIGRATE.value)


def _reversible_item(pending: Sequence[MigrationStatus]) -> PreflightItem:
    unmarked = [
        s.label
        for s in pending
        if s.file is not None and not s.file.reversible and not s.file.irreversible_reason
    ]
    on_purpose = [
        f"{s.label} ({s.file.irreversible_reason})"
        for s in pending
        if s.file is not None and s.file.irreversible_reason
    ]
    if unmarked:
        return _item(
            "migrations_reversible",
            False,
            f"no down section and not marked irreversible: {_listed(unmarked)}. Add a "
            "'-- bluegreen:down' section, or '-- bluegreen:irreversible <reason>' if that "
            "is on purpose",
        )
    reason = f"{len(pending) - len(on_purpose)} reversible"
    if on_purpose:
        reason += f"; irreversible on purpose: {_listed(on_purpose)}"
    return _item("migrations_reversible", True, reason)


# =========================================================================== health

_HEALTH_ITEMS: Final = ("health_checks_implemented", "colours_healthy")


async def _health_items(
    inputs: PreflightInputs,
    session: aiohttp.ClientSession,
    loading: Awaitable[list[MigrationStatus] | str],
) -> list[PreflightItem]:
    probe = inputs.health.probes
    order = [inputs.target.other, inputs.target]  # live first, as people read it
    targets = [(c, s) for c in order for s in inputs.servers.get(c, ())]
    results: list[ProbeResult] = list(
        await asyncio.gather(*(probe_once(session, server, probe) for _, server in targets))
    )
    empty = [c for c in order if not inputs.servers.get(c)]
    where = f"{probe.method} {probe.path}"

    missing = [
        f"{c} {s}: {r.detail}"
        for (c, s), r in zip(targets, results, strict=True)
        if r.status is not None and not r.implemented
    ]
    answered = sum(1 for r in results if r.status is not None)
    if missing:
        implemented = _item(
            "health_checks_implemented",
            False,
            f"{_listed(missing)}. Implement {probe.path} (database reachable, schema as "
            "required, like the seed's /health) or set health.probes.path",
        )
    elif empty or not answered:
        why = f"no servers configured for {', '.join(empty)}" if empty else "no server answered"
        implemented = _item("health_checks_implemented", False, f"cannot tell: {why}")
    else:
        implemented = _item(
            "health_checks_implemented",
            True,
            f"{answered}/{len(results)} server(s) answer {where}",
        )

    failing = [
        f"{c} {s}: {r.detail}" for (c, s), r in zip(targets, results, strict=True) if not r.ok
    ]
    # The new version's health check may require the schema its own expand and
    # migrate files create (the seed's /health does): until they have run, a
    # target that answers is enough; the smoke phase checks its health after.
    waiting = [
        f"{c} {s}"
        for (c, s), r in zip(targets, results, strict=True)
        if c is inputs.target and not r.ok and r.status is not None
    ]
    statuses = await loading
    schema_pending = (
        sum(1 for m in _pending(statuses) if m.phase != MigrationPhase.CONTRACT)
        if not isinstance(statuses, str)
        else 0
    )
    if waiting and schema_pending and len(waiting) == len(failing):
        failing = []
    else:
        waiting = []
    if empty:
        failing = [
            f"{c} has no servers; list them under upstreams.{c}.servers" for c in empty
        ] + failing
    if failing:
        healthy = _item("colours_healthy", False, _listed(failing, noun="more failing"))
    elif waiting:
        live = inputs.target.other
        healthy = _item(
            "colours_healthy",
            True,
            f"{live}: {len(inputs.servers.get(live, ()))} healthy; {inputs.target} answers "
            f"{where} but is not healthy yet ({_listed(waiting)}): it waits for its "
            f"{schema_pending} pending expand/migrate migration(s); the smoke phase checks "
            "it after they run",
        )
    else:
        counts = "; ".join(f"{c}: {len(inputs.servers.get(c, ()))} healthy" for c in order)
        healthy = _item("colours_healthy", True, f"{counts} ({where})")
    return [implemented, healthy]


def _rollback_item(inputs: PreflightInputs) -> PreflightItem:
    h = inputs.health
    if not h.analysis_enabled:
        return _item(
            "automatic_rollback_configured",
            False,
            "health.analysis.enabled is false: nothing would send traffic back to "
            f"{inputs.target.other} if {inputs.target} fails. Enable it",
        )
    a = h.analysis
    p99 = f"p99 above {a.p99_factor:g}x the live colour's"
    limits = (
        f"error rate above the live colour's + {a.error_rate_margin * 100:g} % (or "
        f"{a.max_error_rate * 100:g} % absolute), {p99}"
    )
    probes = "active probes on" if h.probes.enabled else "active probes off"
    return _item(
        "automatic_rollback_configured",
        True,
        f"analysis every {h.analysis_interval:g} s falls back after "
        f"{a.consecutive_failure_limit} failing window(s): {limits}; {probes}",
    )


# =========================================================================== monitoring, backup


async def _monitoring_item(
    inputs: PreflightInputs, session: aiohttp.ClientSession
) -> list[PreflightItem]:
    url = inputs.preflight.metrics_url or inputs.metrics_url
    if not url:
        return [_skipped("monitoring_active", "no metrics URL; set preflight.metrics_url")]
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            body = (await response.content.read(4 * 1024 * 1024)).decode("utf-8", "replace")
            status = response.status
    except TimeoutError:
        return [_item("monitoring_active", False, f"{url}: no answer within 10 s")]
    except (aiohttp.ClientError, OSError) as exc:
        return [_item("monitoring_active", False, f"{url}: {type(exc).__name__}: {exc}")]
    families = sum(1 for line in body.splitlines() if line.startswith("# TYPE "))
    if status != 200 or not families:
        what = f"answered {status}" if status != 200 else "answered without Prometheus metrics"
        return [_item("monitoring_active", False, f"{url} {what}")]
    return [_item("monitoring_active", True, f"{url} serves {families} metric families")]


async def _backup_item(inputs: PreflightInputs) -> list[PreflightItem]:
    check = inputs.preflight.backup_check
    if check is None:
        return [_skipped("backup_recent", "no backup check configured (preflight.backup_check)")]
    env = {
        "BLUEGREEN_VERSION": inputs.version,
        "BLUEGREEN_TARGET": inputs.target.value,
        "BLUEGREEN_DATABASE_URL": inputs.database_url or "",
    }
    outcome = await run_command(check, extra_env=env)
    last = outcome.output_tail.splitlines()[-1] if outcome.output_tail else ""
    said = f": {last}" if last else ""
    return [_item("backup_recent", outcome.ok, f"{outcome.describe()}{said}")]


# =========================================================================== configuration items


def _smoke_item(inputs: PreflightInputs) -> PreflightItem:
    smoke, target = inputs.smoke, inputs.target
    path = inputs.health.probes.path
    checks = smoke.checks_for(target, SmokeRole.TARGET, default_path=path)
    live = smoke.checks_for(target.other, SmokeRole.LIVE, default_path=path)
    problems_found: list[str] = []
    for check in (*checks, *live):
        spec = check.spec
        if isinstance(spec, SqlCheck) and not (
            spec.database_url or smoke.database_url or inputs.database_url
        ):
            problems_found.append(f"{check.name}: no database URL (smoke.database_url)")
        elif isinstance(spec, CommandCheck) and not _command_exists(spec):
            problems_found.append(f"{check.name}: command not found: {spec.argv[0]}")
    if problems_found:
        return _item("smoke_tests_configured", False, _listed(sorted(set(problems_found))))
    if not smoke.configured:
        how = f"only the default GET {path} runs" if checks else "none run"
        return _item(
            "smoke_tests_configured",
            False,
            f"no smoke checks configured; {how}. Add http/sql/command checks under smoke.checks",
        )
    kinds: dict[CheckKind, int] = {}
    for check in checks:
        kinds[check.kind] = kinds.get(check.kind, 0) + 1
    mix = ", ".join(f"{n} {k}" for k, n in kinds.items())
    return _item(
        "smoke_tests_configured",
        True,
        f"{len(checks)} check(s) for {target} ({mix}); {target.other} re-checked with "
        f"{len(live)} after the migrations",
    )


def _command_exists(spec: CommandCheck) -> bool:
    program = spec.argv[0]
    if os.sep in program:
        path = Path(spec.cwd or ".") / program
        return path.is_file() and os.access(path, os.X_OK)
    return shutil.which(program) is not None


def _notifications_item(inputs: PreflightInputs) -> PreflightItem:
    hooks = inputs.notifications.webhooks
    if not hooks:
        return _item(
            "notifications_configured",
            False,
            "no webhooks: nobody is told when the rollout starts or falls back. Add "
            "notifications.webhooks (or attest team_notified)",
        )
    told = [w.name for w in hooks if w.wants("rollout_started") or w.wants("fallback_started")]
    if not told:
        return _item(
            "notifications_configured",
            False,
            "no webhook is told about rollout_started or fallback_started; widen their facts",
        )
    return _item(
        "notifications_configured",
        True,
        f"{len(hooks)} webhook(s) ({', '.join(w.name for w in hooks)}) are told about the rollout",
    )


def _attestation_items(inputs: PreflightInputs) -> list[PreflightItem]:
    given = {a.name: a for a in inputs.attestations}
    items = []
    for cfg in inputs.preflight.attestations:
        a = given.get(cfg.name)
        if a is not None:
            note = f" ({a.note})" if a.note else ""
            reason = f"attested by {a.by} at {_iso(a.at)}{note}"
        else:
            reason = f"not attested; once done, start with --attest {cfg.name}"
        items.append(
            PreflightItem(
                name=cfg.name,
                title=cfg.description,
                ok=a is not None,
                reason=reason,
                required=cfg.required,
                kind="attestation",
                link=cfg.link,
                attested_by=a.by if a is not None else None,
            )
        )
    return items


# =========================================================================== state store


async def _store_item(
    inputs: PreflightInputs,
    items: Sequence[PreflightItem],
    store: StateStore | None,
    actor: str,
    clock: Callable[[], float],
) -> PreflightItem:
    name = "state_store_writable"
    if store is None:
        return _skipped(name, "no state store given")
    detail = {
        "version": inputs.version,
        "target": inputs.target.value,
        "ok": not any(i.blocking for i in items),
        "failed": [i.name for i in items if not i.ok and not i.skipped],
        "attested": [a.to_json() for a in inputs.attestations],
    }
    now = datetime.fromtimestamp(clock(), UTC)
    try:
        async with asyncio.timeout(max(5.0, inputs.preflight.timeout)):
            doc = await store.update(lambda d: with_history(d, HISTORY_KIND, actor, now, detail))
    except TimeoutError:
        return _item(name, False, f"{store.location}: the write did not finish in time")
    except (StateError, OSError) as exc:
        return _item(name, False, f"{store.location}: {exc}")
    return _item(
        name, True, f"recorded this preflight at version {doc.version} of {store.location}"
    )


def _iso(at: float) -> str:
    text = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z"
