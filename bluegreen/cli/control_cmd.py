"""``bluegreen status``, ``weights`` and ``flags``: the control plane from the terminal.

These commands talk to a running proxy's admin API (``--admin-url`` or
``BLUEGREEN_ADMIN_URL``, default ``http://127.0.0.1:9900``; the token from
``--token`` or ``BLUEGREEN_ADMIN_TOKEN``). Exit codes: 0 done; 1 the server
refused (401, 409, 422, ...) or ``--wait`` ran out before every live replica
applied the change; 2 usage errors, an unusable URL, or an admin API that
cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any, Final

from bluegreen.admin_client import AdminClient, Answer
from bluegreen.cli.admin_options import add_client_options, client_from_args, guarded
from bluegreen.cli.output import add_output_option, emit, table
from bluegreen.errors import AdminRequestError, AdminUnreachableError, UsageError
from bluegreen.routing import percent_to_bp

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_WAIT: Final = 30.0
MAX_WAIT: Final = 300.0
CLEAR: Final = "\x1b[H\x1b[2J"


# --------------------------------------------------------------------------- arguments


def _client_options(parser: argparse.ArgumentParser) -> None:
    add_client_options(
        parser, api_of="a running proxy", auth_help="bearer token for changes", timeout=10.0
    )


def _wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        nargs="?",
        const=f"{DEFAULT_WAIT:g}s",
        metavar="TIMEOUT",
        help="wait until every live replica applied the change (default 30s, at most 300s); "
        "exit 1 if some did not",
    )


def parse_duration(text: str, option: str) -> float:
    """Seconds from ``30s``, ``500ms``, ``2m`` or plain seconds; raises UsageError."""
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0))
    value = text.strip()
    factor = 1.0
    for suffix, unit in units:
        if value.endswith(suffix):
            value, factor = value[: -len(suffix)], unit
            break
    try:
        seconds = float(value) * factor
    except ValueError:
        raise UsageError(
            f'{option}: expected a duration like "30s" or "500ms", got {text!r}'
        ) from None
    if not 0 <= seconds <= MAX_WAIT:
        raise UsageError(f"{option}: {text} out of range; use 0..{MAX_WAIT:g}s")
    return seconds


def parse_percent(text: str, option: str) -> float:
    """A percentage 0..100 in 0.01 steps (``10``, ``12.5``, ``12.5%``); raises UsageError."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a percentage 0..100") from None
    try:
        percent_to_bp(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    return value


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add ``status``, ``weights`` and ``flags``."""
    status = subparsers.add_parser(
        "status",
        help="weights, traffic per colour, replicas and flags of a running proxy",
        description="Show the weights, this replica's traffic per colour (rate, errors, "
        "p50/p99, in flight), every replica and the state version it runs, and the flags.",
    )
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds")
    status.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    status.add_argument(
        "--window", type=float, default=10.0, metavar="SECONDS", help="traffic window (max 60)"
    )
    add_output_option(status)
    _client_options(status)
    status.set_defaults(handler=run_status)

    weights = subparsers.add_parser("weights", help="show or set the traffic split")
    wsub = weights.add_subparsers(dest="weights_command", metavar="COMMAND", required=True)
    wget = wsub.add_parser("get", help="show the weights")
    add_output_option(wget)
    _client_options(wget)
    wget.set_defaults(handler=run_weights_get)
    wset = wsub.add_parser(
        "set",
        help="set green's share of traffic",
        description="Set green's share (blue gets the rest). Every replica sharing the "
        "state store applies it; --wait waits until all live replicas did.",
    )
    wset.add_argument("--green", required=True, metavar="PERCENT", help="0..100, 0.01 steps")
    wset.add_argument("--mirror", metavar="PERCENT", help="share of blue's GETs copied to green")
    wset.add_argument("--reason", help="recorded in the state history")
    wset.add_argument(
        "--if-match",
        type=int,
        metavar="VERSION",
        help="only if the state is still at this version (exit 1 on conflict)",
    )
    wset.add_argument(
        "--force",
        action="store_true",
        help="set the weights even while a rollout's controller owns them",
    )
    _wait_option(wset)
    add_output_option(wset)
    _client_options(wset)
    wset.set_defaults(handler=run_weights_set)

    flags = subparsers.add_parser("flags", help="list, set or delete feature flags")
    fsub = flags.add_subparsers(dest="flags_command", metavar="COMMAND", required=True)
    flist = fsub.add_parser("list", help="every flag")
    add_output_option(flist)
    _client_options(flist)
    flist.set_defaults(handler=run_flags_list)
    fset = fsub.add_parser(
        "set",
        help="create or change a flag",
        description="Create a flag or change the options given; options not given keep "
        "their current value (a new flag starts at 0 %% with no allow-list).",
    )
    fset.add_argument("name")
    fset.add_argument("--percent", metavar="P", help="share of sticky keys, 0..100")
    fset.add_argument(
        "--allow",
        action="append",
        metavar="KEY",
        help="a key (user id, email) that always gets the flag; repeat; replaces the list",
    )
    fset.add_argument("--clear-allow", action="store_true", help="empty the allow-list")
    fset.add_argument(
        "--colour", choices=("blue", "green", "any"), help="limit to one colour (any: both)"
    )
    fset.add_argument("--description", help="what the flag turns on")
    _wait_option(fset)
    add_output_option(fset)
    _client_options(fset)
    fset.set_defaults(handler=run_flags_set)
    fdel = fsub.add_parser("delete", help="delete a flag")
    fdel.add_argument("name")
    _wait_option(fdel)
    add_output_option(fdel)
    _client_options(fdel)
    fdel.set_defaults(handler=run_flags_delete)
    feval = fsub.add_parser("evaluate", help="which flags a key gets")
    feval.add_argument("--key", help="the sticky key (user id); none: a request without one")
    feval.add_argument("--colour", choices=("blue", "green"))
    add_output_option(feval)
    _client_options(feval)
    feval.set_defaults(handler=run_flags_evaluate)


# --------------------------------------------------------------------------- plumbing


def _wait_seconds(args: argparse.Namespace) -> float | None:
    return None if args.wait is None else parse_duration(args.wait, "--wait")


def _applied_exit(answer: Answer, output: str) -> int:
    """1 (with who is behind) when a --wait write was not applied everywhere."""
    applied = answer.body.get("applied") if isinstance(answer.body, dict) else None
    if applied is None or applied.get("all_applied"):
        return EXIT_OK
    if output != "json":
        behind = ", ".join(applied.get("behind", [])) or "no live replica"
        print(
            f"bluegreen: written, but not applied everywhere within "
            f"{applied.get('waited_seconds', 0):g}s; behind: {behind}",
            file=sys.stderr,
        )
    return EXIT_FAILED


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:g}%"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def _applied_text(applied: dict[str, Any] | None, version: int) -> str:
    if applied is None:
        return ""
    live = len(applied.get("replicas", []))
    if applied.get("all_applied"):
        noun = "replica" if live == 1 else "replicas"
        return f"\nall {live} live {noun} run version {version}"
    return f"\nnot applied by: {', '.join(applied.get('behind', [])) or 'no live replica'}"


# --------------------------------------------------------------------------- weights


@guarded()
def run_weights_get(args: argparse.Namespace) -> int:
    """Print the weights."""
    emit(client_from_args(args).weights(), args.output, render_weights)
    return EXIT_OK


def render_weights(weights: dict[str, Any]) -> str:
    """``blue 90% / green 10%`` plus version and mirror."""
    text = (
        f"blue {_percent(weights['blue'])} / green {_percent(weights['green'])}  "
        f"(live: {weights['live']}, mirror {_percent(weights['mirror'])}, "
        f"version {weights['version']})"
    )
    return text


@guarded()
def run_weights_set(args: argparse.Namespace) -> int:
    """Set green's weight; exit 1 if --wait ran out."""
    green = parse_percent(args.green, "--green")
    mirror = None if args.mirror is None else parse_percent(args.mirror, "--mirror")
    wait = _wait_seconds(args)
    answer = client_from_args(args).set_weights(
        green,
        mirror=mirror,
        reason=args.reason,
        wait=wait,
        if_match=args.if_match,
        force=args.force,
    )

    def render(body: dict[str, Any]) -> str:
        verb = "set" if body["changed"] else "already"
        weights = body["weights"]
        return f"{verb}: {render_weights(weights)}" + _applied_text(
            body.get("applied"), weights["version"]
        )

    emit(answer.body, args.output, render)
    return _applied_exit(answer, args.output)


# --------------------------------------------------------------------------- flags


def render_flags(body: dict[str, Any]) -> str:
    """The flags as a table."""
    flags = body.get("flags", [])
    if not flags:
        return f"no flags (state version {body.get('version')})"
    rows = [
        [
            f["name"],
            _percent(f["percent"]),
            len(f["allow"]),
            f["colour"] or "any",
            f["description"],
        ]
        for f in flags
    ]
    return table(["flag", "percent", "allow", "colour", "description"], rows)


@guarded()
def run_flags_list(args: argparse.Namespace) -> int:
    """List the flags."""
    emit(client_from_args(args).flags(), args.output, render_flags)
    return EXIT_OK


@guarded()
def run_flags_set(args: argparse.Namespace) -> int:
    """Create or change a flag, keeping options not given (compare-and-set)."""
    client = client_from_args(args)
    percent = None if args.percent is None else parse_percent(args.percent, "--percent")
    if args.clear_allow and args.allow:
        raise UsageError("--allow and --clear-allow contradict each other; give one")
    wait = _wait_seconds(args)
    for _ in range(5):
        current = client.flag(args.name)
        flag: dict[str, Any] = {"percent": 0, "allow": [], "colour": None, "description": ""}
        version = None
        if current is not None:
            flag = {k: current.body[k] for k in ("percent", "allow", "colour", "description")}
            flag["salt"] = current.body["salt"]
            version = int(current.headers.get("etag", "0").strip('"') or 0) or None
        if percent is not None:
            flag["percent"] = percent
        if args.allow:
            flag["allow"] = list(dict.fromkeys(args.allow))
        if args.clear_allow:
            flag["allow"] = []
        if args.colour is not None:
            flag["colour"] = None if args.colour == "any" else args.colour
        if args.description is not None:
            flag["description"] = args.description
        try:
            answer = client.put_flag(args.name, flag, wait=wait, if_match=version)
        except AdminRequestError as exc:
            if exc.status == 409:
                continue  # someone changed the state meanwhile: re-read and re-apply
            raise
        break
    else:
        raise AdminRequestError(409, "the state kept changing; try again")

    def render(body: dict[str, Any]) -> str:
        verb = "created" if body["created"] else ("changed" if body["changed"] else "unchanged")
        return (
            f"{verb}: flag {body['flag']['name']} (state version {body['version']})\n"
            + render_flags({"flags": [body["flag"]]})
            + _applied_text(body.get("applied"), body["version"])
        )

    emit(answer.body, args.output, render)
    return _applied_exit(answer, args.output)


@guarded()
def run_flags_delete(args: argparse.Namespace) -> int:
    """Delete a flag."""
    answer = client_from_args(args).delete_flag(args.name, wait=_wait_seconds(args))
    emit(
        answer.body,
        args.output,
        lambda b: (
            f"deleted: flag {b['deleted']} (state version {b['version']})"
            + _applied_text(b.get("applied"), b["version"])
        ),
    )
    return _applied_exit(answer, args.output)


@guarded()
def run_flags_evaluate(args: argparse.Namespace) -> int:
    """Print which flags a key gets."""
    body = client_from_args(args).evaluate(args.key, args.colour)
    emit(body, args.output, lambda b: ", ".join(b["flags"]) or "(no flags)")
    return EXIT_OK


# --------------------------------------------------------------------------- status


def collect_status(client: AdminClient, window: float) -> dict[str, Any]:
    """Everything ``status`` shows, from three API calls."""
    state = client.state()
    return {
        "admin_url": client.url,
        "version": state["version"],
        "weights": {
            "green": state["green_weight_bp"] / 100,
            "blue": (10000 - state["green_weight_bp"]) / 100,
            "mirror": state["mirror_bp"] / 100,
            "live": state["live"],
            "updated_at": state["updated_at"],
            "updated_by": state["updated_by"],
        },
        "flags": [
            {"name": name, "percent": flag["percent_bp"] / 100, **flag}
            for name, flag in state["flags"].items()
        ],
        "rollout": state["rollout"],
        "replicas": client.replicas(),
        "stats": client.stats(window),
    }


def render_status(status: dict[str, Any]) -> str:
    """The status screen as plain text."""
    w = status["weights"]
    lines = [
        f"bluegreen status  {status['admin_url']}  state version {status['version']}",
        f"weights: blue {_percent(w['blue'])} / green {_percent(w['green'])}  "
        f"(live: {w['live']}, mirror {_percent(w['mirror'])}; "
        f"changed {w['updated_at']} by {w['updated_by']})",
        "",
    ]
    stats = status.get("stats")
    if stats:
        rows = []
        for colour in ("blue", "green"):
            c = stats["colours"][colour]
            rows.append(
                [
                    colour,
                    _percent(w[colour]),
                    f"{c['rate_per_second']:.1f}/s",
                    f"{c['error_ratio'] * 100:.2f}%",
                    _ms(c["p50_seconds"]),
                    _ms(c["p99_seconds"]),
                    c["in_flight"],
                ]
            )
        lines.append(table(["colour", "weight", "rate", "5xx", "p50", "p99", "in flight"], rows))
        lines.append(
            f"(traffic of replica {stats.get('replica')} over the last "
            f"{stats['window_seconds']:g}s)"
        )
    else:
        lines.append("(no traffic numbers: this admin API runs without a proxy)")
    lines.append("")
    replicas = status["replicas"]
    rows = [
        [
            r["id"],
            r["applied_version"],
            "live" if r["alive"] else ("stopped" if r["stopped"] else "dead"),
            f"{r['age_seconds']:.1f}s ago",
            r["listen"],
        ]
        for r in replicas["replicas"]
    ]
    if rows:
        lines.append(table(["replica", "version", "state", "heartbeat", "listen"], rows))
    lines.append(replicas["summary"])
    flags = status["flags"]
    if flags:
        names = ", ".join(f"{f['name']} {_percent(f['percent'])}" for f in flags)
        lines.append(f"flags: {names}")
    else:
        lines.append("flags: none")
    rollout = status.get("rollout")
    if rollout:
        phase = rollout.get("phase", "?") if isinstance(rollout, dict) else "?"
        lines.append(f"rollout: {phase}")
    return "\n".join(lines)


@guarded()
def run_status(args: argparse.Namespace) -> int:
    """Show the status once, or redraw it every --interval with --watch."""
    if not 0 < args.window <= 60:
        raise UsageError("--window: use 0..60 seconds")
    if args.interval <= 0:
        raise UsageError("--interval: must be greater than 0")
    client = client_from_args(args)
    if not args.watch:
        emit(collect_status(client, args.window), args.output, render_status)
        return EXIT_OK
    tty = sys.stdout.isatty() and args.output != "json"
    try:
        while True:
            try:
                frame = collect_status(client, args.window)
                error = None
            except AdminUnreachableError as exc:
                frame, error = None, str(exc)
            _draw(frame, error, args.output, tty)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK


def _draw(frame: dict[str, Any] | None, error: str | None, output: str, tty: bool) -> None:
    now = datetime.now(UTC).strftime("%H:%M:%S")
    out = sys.stdout
    if output == "json":
        record = frame if frame is not None else {"error": error}
        out.write(json.dumps({"at": now, **record}, sort_keys=True, default=str) + "\n")
    else:
        text = render_status(frame) if frame is not None else f"unreachable: {error}"
        if tty:
            out.write(CLEAR + text + f"\n\n{now}  (Ctrl-C to stop)\n")
        else:
            out.write(f"--- {now}\n{text}\n")
    out.flush()
