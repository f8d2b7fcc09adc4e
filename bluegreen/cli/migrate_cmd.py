"""``bluegreen migrate``: status, up, down, plan, verify and check.

Every subcommand takes the database from ``--database-url`` or
``DATABASE_URL`` and the files from ``--dir`` (default ``migrations/``).
Progress goes to stdout as each migration and step runs (to stderr with
``--output json``, so stdout holds exactly one JSON document). Exit codes:
0 done, 1 a migration failed / hazards / problems found / check failed,
2 usage or configuration error (including malformed migration files).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from bluegreen.cli.output import add_output_option, emit, table
from bluegreen.errors import BluegreenError, MigrationFileError, UsageError
from bluegreen.migrations.files import Phase, parse_duration

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Subcommands registered by their own modules (``register(migrate_subparsers)``).
_SUBCOMMAND_MODULES = ("bluegreen.cli.migrate_lint_cmd", "bluegreen.cli.migrate_new_cmd")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a migration version number, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a version is >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``migrate`` command group."""
    parser = subparsers.add_parser(
        "migrate",
        help="phased, lock-safe schema migrations (expand / migrate / contract)",
        description=(
            "Apply, roll back and inspect plain-SQL migrations. Every DDL statement runs under "
            "lock_timeout with retries, so a migration never queues behind a long transaction "
            "while the application's queries pile up behind it. Use a direct connection, not "
            "a transaction-pooling PgBouncer."
        ),
    )
    migrate = parser.add_subparsers(dest="migrate_command", metavar="SUBCOMMAND", required=True)

    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://user:password@host:port/database (default: $DATABASE_URL)",
    )
    database.add_argument(
        "--dir",
        type=Path,
        default=Path("migrations"),
        help="the migrations directory (default: migrations/)",
    )

    timing = argparse.ArgumentParser(add_help=False)
    timing.add_argument(
        "--lock-timeout",
        type=_duration,
        default=2.0,
        metavar="DURATION",
        help="longest a statement may wait for a lock before giving up and retrying "
        "(default 2s; a file's '-- bluegreen:lock-timeout' wins)",
    )
    timing.add_argument(
        "--lock-retries",
        type=_count,
        default=5,
        metavar="N",
        help="retries after a lock timeout, with exponential backoff and jitter (default 5)",
    )
    timing.add_argument(
        "--statement-timeout",
        type=_duration,
        default=60.0,
        metavar="DURATION",
        help="statement_timeout for statements in transactions (default 60s)",
    )
    timing.add_argument(
        "--standalone-statement-timeout",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="statement_timeout for statements outside transactions, such as CREATE INDEX "
        "CONCURRENTLY, which do not block the application (default 0 = none)",
    )
    timing.add_argument(
        "--nonblocking-lock-timeout",
        type=_duration,
        default=300.0,
        metavar="DURATION",
        help="lock_timeout for statements outside transactions whose lock blocks neither "
        "reads nor writes (CREATE/DROP INDEX CONCURRENTLY, VACUUM...): they wait for older "
        "transactions without holding up the application (default 5min)",
    )
    timing.add_argument(
        "--lock-wait",
        type=_duration,
        default=30.0,
        metavar="DURATION",
        help="how long to wait for another runner to finish (default 30s)",
    )

    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument(
        "--to", type=_version, metavar="VERSION", help="only migrations up to this version"
    )
    selection.add_argument(
        "--phase",
        action="append",
        choices=[p.value for p in Phase],
        help="only migrations of this phase (repeatable)",
    )
    selection.add_argument(
        "--out-of-order",
        action="store_true",
        help="allow applying a migration older than applied migrations of the same or a "
        "later phase (off by default, like Flyway's outOfOrder)",
    )

    p = migrate.add_parser(
        "status", parents=[database], help="every migration and its state", description=None
    )
    add_output_option(p)
    p.set_defaults(handler=_status)

    p = migrate.add_parser(
        "up",
        parents=[database, selection, timing],
        help="lint, then apply pending migrations",
        description="Lint the pending migrations, refuse hazards, then apply them in order.",
    )
    p.add_argument(
        "--allow-hazard",
        action="append",
        default=[],
        metavar="RULE",
        help="run even though the linter reports RULE (repeatable)",
    )
    add_output_option(p)
    p.set_defaults(handler=_up)

    p = migrate.add_parser(
        "down",
        parents=[database, timing],
        help="roll back the newest migration (or all above --to)",
        description="Run down sections, newest first. Refuses, before running anything, "
        "when one of the migrations is irreversible.",
    )
    p.add_argument(
        "--to",
        type=_version,
        metavar="VERSION",
        help="roll back every migration above VERSION (0 = all)",
    )
    add_output_option(p)
    p.set_defaults(handler=_down)

    p = migrate.add_parser(
        "plan",
        parents=[database, selection, timing],
        help="what up (or down) would run: steps, locks, row estimates",
    )
    p.add_argument("--down", action="store_true", help="plan a rollback instead (uses --to)")
    add_output_option(p)
    p.set_defaults(handler=_plan)

    p = migrate.add_parser(
        "verify",
        parents=[database],
        help="check checksums, missing and out-of-order files, unfinished runs",
    )
    add_output_option(p)
    p.set_defaults(handler=_verify)

    p = migrate.add_parser(
        "check",
        parents=[database],
        help="does the database have these tables/columns and this version? (health)",
        description="Exit 0 when every required table/column exists and the applied "
        "version is at least --version, 1 otherwise.",
    )
    p.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="TABLE[.COLUMN]",
        help="a table or column that must exist (repeatable)",
    )
    p.add_argument(
        "--version", type=_version, dest="min_version", help="minimum applied migration version"
    )
    add_output_option(p)
    p.set_defaults(handler=_check)

    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(migrate)


# --------------------------------------------------------------------------- helpers


def _database_url(args: argparse.Namespace) -> str:
    url: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise UsageError(
            "no database given: pass --database-url postgresql://... or set DATABASE_URL"
        )
    return url


def _options(args: argparse.Namespace) -> Any:
    from bluegreen.migrations.runner import RunOptions

    return RunOptions(
        lock_timeout=args.lock_timeout,
        lock_retries=args.lock_retries,
        statement_timeout=args.statement_timeout,
        standalone_statement_timeout=args.standalone_statement_timeout,
        nonblocking_lock_timeout=args.nonblocking_lock_timeout,
        lock_wait=args.lock_wait,
    )


def _run(args: argparse.Namespace, work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command coroutine; map errors to exit codes (files: 2, others: 1)."""
    try:
        return asyncio.run(work())
    except MigrationFileError as exc:
        _fail(args, exc)
        return EXIT_USAGE
    except UsageError:
        raise
    except BluegreenError as exc:
        _fail(args, exc)
        return EXIT_FAILED


def _fail(args: argparse.Namespace, exc: BaseException) -> None:
    print(f"bluegreen: {exc}", file=sys.stderr)
    if getattr(args, "output", "text") == "json":
        emit({"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}, "json", str)


def _progress_stream(args: argparse.Namespace) -> TextIO:
    return sys.stderr if args.output == "json" else sys.stdout


class _LineLogger:
    """Enough of a structlog logger for the backfill progress reporter: plain lines."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def info(self, event: str, **fields: Any) -> None:
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        self._stream.write(f"  {event} {text}\n")
        self._stream.flush()


def _printer(stream: TextIO) -> Callable[[Any], None]:
    """The ``on_event`` callback: one line per event; backfills get a bar on a TTY."""
    from bluegreen.migrations.events import BackfillProgressed
    from bluegreen.migrations.progress import BackfillProgress, ProgressReporter

    reporter: ProgressReporter | None = None

    def on_event(event: Any) -> None:
        nonlocal reporter
        if isinstance(event, BackfillProgressed) and isinstance(event.progress, BackfillProgress):
            if reporter is None:
                reporter = ProgressReporter(stream, logger=_LineLogger(stream))
            reporter(event.progress)
            if event.progress.finished:
                reporter = None
            return
        stream.write(event.describe() + "\n")
        stream.flush()

    return on_event


# --------------------------------------------------------------------------- status / verify


def _status(args: argparse.Namespace) -> int:
    from bluegreen.migrations import runner
    from bluegreen.migrations.plan import problems

    url = _database_url(args)

    async def work() -> int:
        report = await runner.status_report(url, args.dir)
        statuses = report.migrations
        found = problems(statuses)
        current = max(
            (s.version for s in statuses if s.state.value in ("applied", "rollback_failed")),
            default=None,
        )
        data = {
            "database": runner.safe_url(url),
            "directory": str(args.dir),
            "current_version": current,
            "migrations": [s.to_dict() for s in statuses],
            "backfills": [b.to_dict() for b in report.backfills],
            "problems": [p.to_dict() for p in found],
        }
        emit(data, args.output, _render_status)
        return EXIT_OK

    return _run(args, work)


def _render_status(data: dict[str, Any]) -> str:
    rows = []
    unfinished = {(b["migration"], b["direction"]) for b in data["backfills"]}
    for m in data["migrations"]:
        last = m["last_attempt"] or {}
        notes = []
        for direction in ("up", "down"):
            if (m["label"], direction) in unfinished:
                notes.append("backfill unfinished" + (" (down)" if direction == "down" else ""))
        if m["checksum_changed"]:
            notes.append("FILE CHANGED")
        if m["out_of_order"]:
            notes.append("out of order")
        if m["deferred"]:
            notes.append("deferred")
        if m["state"] in ("failed", "interrupted", "rollback_failed"):
            notes.append(f"{last.get('steps_done', 0)}/{last.get('steps_total', 0)} steps")
        rows.append(
            [
                m["version"],
                m["name"],
                m["phase"],
                m["state"],
                (m["applied_at"] or "")[:19].replace("T", " "),
                {True: "yes", False: "no", None: "?"}[m["reversible"]],
                last.get("run_by", "") if m["state"] != "pending" else "",
                ", ".join(notes),
            ]
        )
    lines = [
        f"database {data['database']}  directory {data['directory']}  "
        f"version {data['current_version'] if data['current_version'] is not None else '-'}",
        "",
        table(["VERSION", "NAME", "PHASE", "STATE", "APPLIED AT", "DOWN", "BY", "NOTES"], rows)
        if rows
        else "no migrations found",
    ]
    if data["backfills"]:
        lines += ["", "unfinished backfills (the next run of their section resumes each one):"]
        lines += [_render_backfill(b) for b in data["backfills"]]
    if data["problems"]:
        lines += ["", "problems:"]
        lines += [f"  {p['severity']}: {p['message']}" for p in data["problems"]]
    return "\n".join(lines)


def _render_backfill(b: dict[str, Any]) -> str:
    where = f"step {b['step']}"
    if b["line"] is not None:
        where += f", line {b['line']}: {b['statement']}"
    else:
        where += " (no backfill at that step in the file now)"
    batches = "1 batch" if b["batches"] == 1 else f"{b['batches']:,} batches"
    if b["last_key"] is None:
        position = "no batch committed yet"
    elif b["mode"] == "ctid":
        position = f"done up to heap page {b['last_key']}"
    else:
        position = f"last {b['key']} done: {b['last_key']}"
    when = (b["updated_at"] or "")[:19].replace("T", " ")
    return (
        f"  {b['migration']} ({b['direction']}) {where}\n"
        f"    {b['rows_done']:,} rows updated in {batches} on {b['table']}; {position}"
        + (f"; last batch {when}" if when else "")
    )


def _verify(args: argparse.Namespace) -> int:
    from bluegreen.migrations import runner

    url = _database_url(args)

    async def work() -> int:
        found = await runner.verify(url, args.dir)
        errors = [p for p in found if p.severity.value == "error"]
        data = {"ok": not errors, "problems": [p.to_dict() for p in found]}
        emit(data, args.output, _render_verify)
        return EXIT_FAILED if errors else EXIT_OK

    return _run(args, work)


def _render_verify(data: dict[str, Any]) -> str:
    if not data["problems"]:
        return "ok: checksums match, no missing, out-of-order or unfinished migrations"
    lines = [f"{p['severity']}: {p['kind']}: {p['message']}" for p in data["problems"]]
    lines.append("verify: " + ("ok (warnings only)" if data["ok"] else "FAILED"))
    return "\n".join(lines)


# --------------------------------------------------------------------------- up / down


def _up(args: argparse.Namespace) -> int:
    from bluegreen.migrations import runner

    url = _database_url(args)
    options = _options(args)
    stream = _progress_stream(args)

    async def work() -> int:
        result = await runner.apply(
            url,
            args.dir,
            phases=args.phase,
            to=args.to,
            allow_hazards=tuple(args.allow_hazard),
            allow_out_of_order=args.out_of_order,
            options=options,
            on_event=_printer(stream),
            raise_on_failure=False,
        )
        return _finish(args, result)

    return _run(args, work)


def _down(args: argparse.Namespace) -> int:
    from bluegreen.migrations import runner

    url = _database_url(args)
    options = _options(args)
    stream = _progress_stream(args)

    async def work() -> int:
        result = await runner.rollback(
            url,
            args.dir,
            to=args.to,
            options=options,
            on_event=_printer(stream),
            raise_on_failure=False,
        )
        return _finish(args, result)

    return _run(args, work)


def _finish(args: argparse.Namespace, result: Any) -> int:
    if result.error is not None:
        print(f"bluegreen: {result.error}", file=sys.stderr)
    emit(result.to_dict(), args.output, _render_result)
    return EXIT_OK if result.ok else EXIT_FAILED


def _render_result(data: dict[str, Any]) -> str:
    done = [m for m in data["migrations"] if m["outcome"] in ("applied", "rolled_back")]
    verb = "applied" if data["direction"] == "up" else "rolled back"
    version = data["current_version"]
    at = f"; database at version {version}" if version is not None else "; no migration applied"
    if data["error"] is not None:
        if data["hazards"]:
            return f"refused: {len(data['hazards'])} hazard(s); nothing was run{at}"
        return f"FAILED after {len(done)} migration(s) {verb}{at}"
    if not data["migrations"]:
        return f"nothing to do{at}"
    return f"{verb} {len(done)} migration(s){at}"


# --------------------------------------------------------------------------- plan


def _plan(args: argparse.Namespace) -> int:
    from bluegreen.migrations import runner
    from bluegreen.migrations.plan import Direction

    url = _database_url(args)

    async def work() -> int:
        result = await runner.plan(
            url,
            args.dir,
            direction=Direction.DOWN if args.down else Direction.UP,
            phases=args.phase,
            to=args.to,
            allow_out_of_order=args.out_of_order,
            options=_options(args),
        )
        data = result.to_dict()
        data["database"] = runner.safe_url(url)
        emit(data, args.output, _render_plan)
        return EXIT_OK

    return _run(args, work)


def _seconds(value: float) -> str:
    from bluegreen.migrations.locking import human_seconds

    return "none" if value == 0 else human_seconds(value)


def _rows(estimate: dict[str, Any]) -> str:
    if not estimate["exists"]:
        return f"{estimate['name']}: new (does not exist yet)"
    rows = estimate["estimated_rows"]
    if rows is None:
        count = "row count unknown"
    elif estimate.get("source") == "n_live_tup":
        count = f"~{rows:,} rows (never analyzed: live-row counter)"
    else:
        count = f"~{rows:,} rows"
    size = estimate["size_bytes"]
    if size is not None:
        count += f", {size / 1048576:,.1f} MiB" if size >= 1048576 else f", {size:,} bytes"
    return f"{estimate['name']}: {count}"


def _render_plan(data: dict[str, Any]) -> str:
    migrations = data["migrations"]
    verb = "apply" if data["direction"] == "up" else "roll back"
    if not migrations:
        return f"nothing to {verb}"
    lines = [f"plan: {verb} {len(migrations)} migration(s) on {data['database']}"]
    kinds = {
        "transaction": "in one transaction",
        "standalone": "outside a transaction",
        "backfill": "batched backfill (short transactions)",
    }
    for m in migrations:
        down = "reversible" if m["reversible"] else "IRREVERSIBLE"
        lines.append("")
        lines.append(f"{m['label']} ({m['phase']}, {down})")
        lines += [f"  note: {n}" for n in m["notes"]]
        for step in m["steps"]:
            why = f" ({step['reason']})" if step["reason"] and step["kind"] != "backfill" else ""
            skipped = "  [already committed, skipped]" if step["skipped"] else ""
            lines.append(f"  step {step['number']}: {kinds[step['kind']]}{why}{skipped}")
            if step["kind"] != "backfill":
                limits = (
                    f"lock_timeout {_seconds(step['lock_timeout_seconds'])}, "
                    f"statement_timeout {_seconds(step['statement_timeout_seconds'])}"
                )
                if step["nonblocking"]:
                    limits += " (its lock waits hold up no application query)"
                lines.append(f"    {limits}")
            for s in step["statements"]:
                sql = " ".join(s["sql"].split())
                lines.append(f"    line {s['line']}: {sql if len(sql) < 90 else sql[:89] + '…'}")
                lock = s["lock"]
                if lock is not None:
                    blocks = lock["blocks"]
                    extra = []
                    if lock["rewrites"]:
                        extra.append("rewrites the table")
                    elif lock.get("scans"):
                        extra.append("scans the table")
                    if lock.get("note"):
                        extra.append(lock["note"])
                    tail = f"; {'; '.join(extra)}" if extra else ""
                    lines.append(f"      lock: {lock['mode']}, blocks {blocks}{tail}")
                for t in s["tables"]:
                    lines.append(f"      {_rows(t)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- check


def _check(args: argparse.Namespace) -> int:
    from bluegreen.migrations.schema import check_schema

    url = _database_url(args)
    if not args.require and args.min_version is None:
        raise UsageError("nothing to check: give --require TABLE[.COLUMN] and/or --version V")

    async def work() -> int:
        result = await check_schema(url, require=args.require, min_version=args.min_version)
        emit(result.to_dict(), args.output, _render_check)
        return EXIT_OK if result.ok else EXIT_FAILED

    return _run(args, work)


def _render_check(data: dict[str, Any]) -> str:
    lines = [
        f"{'ok ' if k not in data['missing'] else 'MISSING'}  {k}: {v}"
        for k, v in data["details"].items()
    ]
    lines.append("healthy" if data["ok"] else f"unhealthy: missing {', '.join(data['missing'])}")
    return "\n".join(lines)
