"""``bluegreen rollout``: start, watch and steer a rollout from the terminal or CI.

Talks to any replica's admin API (``--admin-url`` or ``BLUEGREEN_ADMIN_URL``;
the token from ``--token`` or ``BLUEGREEN_ADMIN_TOKEN``), like ``status``.

``rollout start VERSION --wait`` is what a CI pipeline calls: it prints each
step of the rollout as it happens and exits **0** when the rollout is
promoted, **1** when it rolled back or was aborted (with the reason and the
detection time), or when ``--wait TIMEOUT`` ran out first (the rollout goes
on), and **2** on a usage or configuration error (bad flags, bad token,
unreachable admin API at the start). The other commands exit 0 when the
command was applied and 1 when the rollout refused it (409: the message says
what it allows instead).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from bluegreen import config
from bluegreen.admin_client import AdminClient
from bluegreen.cli.admin_options import add_client_options, client_from_args, guarded
from bluegreen.cli.output import add_output_option, emit, table
from bluegreen.errors import AdminUnreachableError, ConfigError, UsageError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
ROLLOUT: Final = "/api/v1/rollout"
FINISHED: Final = ("promoted", "rolled_back", "aborted")
USAGE_STATUSES: Final = (400, 401, 403, 404, 413, 415, 422)
CLEAR: Final = "\x1b[H\x1b[2J"


# =========================================================================== arguments


def parse_duration(text: str, option: str) -> float:
    """Seconds from ``90``, ``30s``, ``500ms``, ``5m``, ``2h`` (as in the config); UsageError."""
    try:
        return config.parse_duration(text, option)
    except ConfigError:
        raise UsageError(
            f'{option}: expected a duration like "30s", "5m" or "1h", got {text!r}'
        ) from None


def parse_step(text: str) -> dict[str, Any]:
    """``WEIGHT:BAKE`` (``10:30s``, ``50%:5m``, ``100:0``) as the API's step object."""
    weight_text, sep, bake_text = text.partition(":")
    if not sep:
        raise UsageError(f"--step: expected WEIGHT:BAKE like 10:30s, got {text!r}")
    try:
        weight = float(weight_text.strip().rstrip("%"))
    except ValueError:
        raise UsageError(f"--step: {weight_text!r} is not a percentage 0.01..100") from None
    if not 0 < weight <= 100:
        raise UsageError(f"--step: weight {weight:g} out of range; use 0.01..100")
    return {"weight": weight, "bake": parse_duration(bake_text, "--step")}


def _client_options(parser: argparse.ArgumentParser) -> None:
    add_client_options(parser, api_of="any replica", auth_help="bearer token", timeout=30.0)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add ``rollout`` and its subcommands."""
    rollout = subparsers.add_parser(
        "rollout",
        help="start, watch, pause, resume, promote, abort or contract a rollout",
        description="Drive the rollout controller: preflight, migrations, smoke tests, the "
        "10/50/100 % ramp with health analysis and automatic fallback.",
    )
    sub = rollout.add_subparsers(dest="rollout_command", metavar="COMMAND", required=True)

    start = sub.add_parser(
        "start",
        help="start a rollout of VERSION to the colour that is not live",
        description="Start a rollout. With --wait, print its progress and exit 0 when "
        "promoted, 1 when rolled back or aborted (or when TIMEOUT ran out), 2 on usage errors.",
    )
    start.add_argument("version", help="version label of what the new colour runs, e.g. v2")
    start.add_argument(
        "--wait",
        nargs="?",
        const="0",
        metavar="TIMEOUT",
        help="follow the rollout until it ends (optionally at most TIMEOUT, e.g. 30m)",
    )
    start.add_argument(
        "--step",
        action="append",
        metavar="WEIGHT:BAKE",
        help="a ramp step, e.g. --step 10:5m --step 50:10m --step 100:5m (default: the "
        "config's rollout.steps); a 100 %% step is added when missing",
    )
    start.add_argument(
        "--attest",
        action="append",
        metavar="NAME",
        help="vouch for a checklist item no machine can check (preflight.attestations)",
    )
    start.add_argument("--by", metavar="WHO", help="who attests (default: the API caller)")
    start.add_argument(
        "--interval", type=float, default=0.5, metavar="SECONDS", help="--wait poll interval"
    )
    add_output_option(start)
    _client_options(start)
    start.set_defaults(handler=run_start)

    status = sub.add_parser("status", help="where the rollout is, what it waits for")
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds")
    status.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    status.add_argument(
        "--log", type=int, default=10, metavar="N", help="show the last N log lines (default 10)"
    )
    add_output_option(status)
    _client_options(status)
    status.set_defaults(handler=run_status)

    for name, text in (
        ("pause", "hold the current weight; the bake clock stops"),
        ("resume", "continue a paused rollout with the bake time left"),
        ("promote", "skip the remaining steps: 100 %% now"),
        ("abort", "send all traffic back to the old colour; the rollout ends aborted"),
    ):
        cmd = sub.add_parser(name, help=text)
        if name in ("pause", "abort"):
            cmd.add_argument("--reason", help="recorded in the rollout log and notifications")
        add_output_option(cmd)
        _client_options(cmd)
        cmd.set_defaults(handler=run_command, command_name=name)

    contract = sub.add_parser(
        "contract",
        help="run the contract migrations of the promoted rollout",
        description="Refused while the old colour still serves traffic or has requests in "
        "flight; runs after the grace period (rollout.contract_grace), or now with --now.",
    )
    contract.add_argument(
        "--now",
        "--skip-grace",
        dest="now",
        action="store_true",
        help="skip what is left of the grace period",
    )
    add_output_option(contract)
    _client_options(contract)
    contract.set_defaults(handler=run_command, command_name="contract")

    preflight = sub.add_parser(
        "preflight",
        help="run the pre-production checklist now (✓/✗ per item)",
        description="Exit 0 when no required item failed, 1 otherwise.",
    )
    preflight.add_argument("--version", dest="rollout_version", metavar="VERSION")
    preflight.add_argument("--attest", action="append", metavar="NAME")
    preflight.add_argument("--by", metavar="WHO")
    add_output_option(preflight)
    _client_options(preflight)
    preflight.set_defaults(handler=run_preflight)


# =========================================================================== plumbing


def _clock(at: float | None) -> str:
    if at is None:
        return "--:--:--"
    return datetime.fromtimestamp(at, UTC).astimezone().strftime("%H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def log_line(entry: dict[str, Any]) -> str:
    """One transition-log entry for people."""
    return (
        f"{_clock(entry.get('at'))}  {entry.get('to_phase', '?'):<12}  {entry.get('message', '')}"
    )


def outcome_lines(view: dict[str, Any]) -> list[str]:
    """The end of a rollout: promoted, or why it fell back and how fast."""
    record = view.get("rollout") or {}
    phase = view.get("phase")
    if phase == "promoted":
        return [f"promoted: {record.get('target')} serves 100 % and is live ({view['summary']})"]
    failure = record.get("failure") or {}
    lines = [f"{phase}: {failure.get('message', '?')} (reason: {failure.get('code', '?')})"]
    fb = record.get("fallback")
    if fb:
        lines.append(
            f"detection: {_seconds(view.get('detection_seconds'))} from the first failing "
            f"measurement to the decision; {_seconds(view.get('fallback_seconds'))} to 0 % on "
            "every replica"
        )
    return lines


# =========================================================================== start


@guarded(usage_statuses=USAGE_STATUSES)
def run_start(args: argparse.Namespace) -> int:
    """Start a rollout; with --wait follow it to its end."""
    body: dict[str, Any] = {"version": args.version}
    if args.step:
        body["steps"] = [parse_step(s) for s in args.step]
    if args.attest:
        body["attest"] = list(dict.fromkeys(args.attest))
    if args.by:
        body["by"] = args.by
    wait = None if args.wait is None else parse_duration(args.wait, "--wait")
    if args.interval <= 0:
        raise UsageError("--interval: must be greater than 0")
    client = client_from_args(args)
    answer = client.request("POST", ROLLOUT, body=body)
    view = answer.body
    rollout_id = view.get("id")
    if wait is None:
        emit(view, args.output, lambda v: f"started: {v['summary']}")
        return EXIT_OK
    if args.output != "json":
        print(f"started: {view['summary']}", flush=True)
    return follow(client, rollout_id, wait or None, args.interval, args.output)


def follow(
    client: AdminClient,
    rollout_id: int | None,
    timeout: float | None,
    interval: float,
    output: str = "text",
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the rollout's log as it grows; 0 promoted, 1 rolled back/aborted/timed out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    printed = 0.0
    seen: set[tuple[float, str]] = set()
    unreachable = False
    while True:
        try:
            view = client.request("GET", ROLLOUT).body
            if unreachable:
                print("admin API reachable again", file=sys.stderr, flush=True)
            unreachable = False
        except AdminUnreachableError as exc:
            if not unreachable:
                print(f"bluegreen: {exc}; retrying", file=sys.stderr, flush=True)
            unreachable = True
            view = None
        if view is not None:
            record = view.get("rollout") or {}
            if rollout_id is not None and record.get("id") not in (None, rollout_id):
                print(
                    f"bluegreen: rollout {record.get('id')} replaced rollout {rollout_id}",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            for entry in record.get("log", []):
                key = (float(entry.get("at", 0.0)), str(entry.get("message", "")))
                if key in seen or key[0] < printed - 60:
                    continue
                seen.add(key)
                printed = max(printed, key[0])
                if output == "json":
                    print(json.dumps(entry, sort_keys=True), flush=True)
                else:
                    print(log_line(entry), flush=True)
            if view.get("phase") in FINISHED:
                if output == "json":
                    print(json.dumps(view, sort_keys=True, default=str), flush=True)
                else:
                    for line in outcome_lines(view):
                        print(line, flush=True)
                return EXIT_OK if view["phase"] == "promoted" else EXIT_FAILED
        if deadline is not None and time.monotonic() >= deadline:
            phase = view.get("phase") if view else "unknown"
            print(
                f"bluegreen: --wait ran out with the rollout in {phase}; it goes on. "
                "Watch it with `bluegreen rollout status --watch`",
                file=sys.stderr,
            )
            return EXIT_FAILED
        sleep(interval)


# =========================================================================== status


def render_status(view: dict[str, Any], log_lines: int = 10) -> str:
    """The rollout as plain text."""
    lines = [view["summary"]]
    w = view.get("weights", {})
    lines.append(
        f"weights: blue {w.get('blue', 0):g}% / green {w.get('green', 0):g}% "
        f"(live: {w.get('live', '?')})  leader: {view.get('leader') or 'unknown'}  "
        f"state version {view.get('state_version')}"
    )
    record = view.get("rollout")
    if record:
        rows = []
        current = record.get("step_index", 0)
        for i, step in enumerate(record.get("steps", [])):
            if record.get("phase") in ("ramp", "bake") and i == current:
                mark = "now"
            elif i < current or record.get("phase") == "promoted":
                mark = "done"
            else:
                mark = ""
            rows.append(
                [i + 1, f"{step['weight_bp'] / 100:g}%", f"{step['bake_seconds']:g}s", mark]
            )
        lines.append(table(["step", "weight", "bake", ""], rows))
        results = record.get("results", {})
        applied = results.get("migrations", [])
        if applied:
            names = ", ".join(f"{m['name']} ({m['duration_seconds']:.2f}s)" for m in applied)
            lines.append(f"migrations: {names}")
        smoke = results.get("smoke", [])
        if smoke:
            failed = [s for s in smoke if not s.get("ok")]
            lines.append(f"smoke: {len(smoke) - len(failed)}/{len(smoke)} passed")
        if record.get("phase") in ("rolling_back", "rolled_back", "aborted"):
            lines.extend(outcome_lines(view))
    analysis = view.get("analysis")
    if analysis:
        lines.append(f"analysis: {analysis.get('status')}: {analysis.get('message')}")
    lines.append(f"allowed: {', '.join(view.get('allowed', [])) or 'nothing'}")
    if record and log_lines > 0:
        lines.append("")
        lines.extend(log_line(e) for e in record.get("log", [])[-log_lines:])
    return "\n".join(lines)


@guarded(usage_statuses=USAGE_STATUSES)
def run_status(args: argparse.Namespace) -> int:
    """Show the rollout once, or redraw it with --watch."""
    if args.interval <= 0:
        raise UsageError("--interval: must be greater than 0")
    client = client_from_args(args)
    if not args.watch:
        emit(client.request("GET", ROLLOUT).body, args.output, lambda v: render_status(v, args.log))
        return EXIT_OK
    tty = sys.stdout.isatty() and args.output != "json"
    try:
        while True:
            try:
                view = client.request("GET", ROLLOUT).body
                text = render_status(view, args.log)
            except AdminUnreachableError as exc:
                view, text = None, f"unreachable: {exc}"
            now = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
            if args.output == "json":
                record = view if view is not None else {"error": text}
                sys.stdout.write(json.dumps({"at": now, **record}, default=str) + "\n")
            elif tty:
                sys.stdout.write(CLEAR + text + f"\n\n{now}  (Ctrl-C to stop)\n")
            else:
                sys.stdout.write(f"--- {now}\n{text}\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK


# =========================================================================== commands


@guarded(usage_statuses=USAGE_STATUSES)
def run_command(args: argparse.Namespace) -> int:
    """pause / resume / promote / abort / contract."""
    name = args.command_name
    body: dict[str, Any] = {}
    if getattr(args, "reason", None):
        body["reason"] = args.reason
    if name == "contract" and args.now:
        body["now"] = True
    view = client_from_args(args).request("POST", f"{ROLLOUT}/{name}", body=body).body
    emit(view, args.output, lambda v: f"{name}: {v['summary']}")
    return EXIT_OK


@guarded(usage_statuses=USAGE_STATUSES)
def run_preflight(args: argparse.Namespace) -> int:
    """Run the checklist; exit 1 when a required item failed."""
    body: dict[str, Any] = {}
    if args.rollout_version:
        body["version"] = args.rollout_version
    if args.attest:
        body["attest"] = list(dict.fromkeys(args.attest))
    if args.by:
        body["by"] = args.by
    report = client_from_args(args).request("POST", f"{ROLLOUT}/preflight", body=body).body
    emit(report, args.output, render_preflight)
    return EXIT_OK if report.get("ok") else EXIT_FAILED


def render_preflight(report: dict[str, Any]) -> str:
    """✓/✗/!/- per item with the reason, then the verdict."""
    items = report.get("items", [])
    width = max((len(i["name"]) for i in items), default=0)
    lines = []
    for i in items:
        if i.get("skipped"):
            mark = "-"
        elif i.get("ok"):
            mark = "✓"
        else:
            mark = "✗" if i.get("required") else "!"
        note = (
            "warning: "
            if not i.get("ok") and not i.get("required") and not i.get("skipped")
            else ""
        )
        link = f" ({i['link']})" if i.get("link") and not i.get("ok") else ""
        lines.append(f"{mark} {i['name']:<{width}}  {note}{i.get('reason', '')}{link}")
    blocking = [i["name"] for i in items if i.get("required") and not i.get("ok")]
    if report.get("ok"):
        lines.append(f"preflight passed for {report.get('version')} -> {report.get('target')}")
    else:
        lines.append(f"preflight failed: {', '.join(blocking)}")
    return "\n".join(lines)
