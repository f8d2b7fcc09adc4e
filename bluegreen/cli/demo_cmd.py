"""``bluegreen demo``: a whole zero-downtime rollout on this machine, under load, measured."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Final

from bluegreen.cli.output import add_output_option
from bluegreen.cli.rollout_cmd import parse_duration

if TYPE_CHECKING:  # the demo loads only for this command
    from bluegreen.demo.run import DemoOptions

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1

_DESCRIPTION: Final = """\
Run the seed's orders API in two versions (blue v1, green v2) behind `bluegreen serve`,
send a mixed read/write load (~200 requests/s) through the proxy, and roll v2 out with the
real controller: preflight, expand + migrate (with a batched backfill), smoke tests,
10 -> 50 -> 100 %, and the contract after a short grace. Then print what every request saw:
a timeline of phases and weights, requests and failures per phase and colour, p50/p99
latency per colour, migration durations, and the fallback time after a failure.

Database: --database-url or DATABASE_URL (the demo creates a database of its own there and
drops it at the end; the role needs CREATEDB), else an embedded PostgreSQL
(pip install 'bluegreen[demo]'). Everything it starts is stopped on exit, Ctrl-C included.
Progress goes to stderr, the report to stdout."""

_EPILOG: Final = """\
exit codes:
  0  the run ended as expected with no failure beyond what it allows:
       plain:          promoted (contract done) and 0 failed requests
       --break green:  rolled back; failures only 5xx from green between the moment
                       it started failing and its weight reaching 0 %
       --kill green:   rolled back; 0 failed idempotent requests, non-idempotent ones
                       only if they were in flight on green when it died
  1  anything else (the report says what), or the demo could not run
  2  usage error
  130/143  interrupted by Ctrl-C / SIGTERM (everything started was stopped)"""


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add the ``demo`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="roll v2 of a demo app out under load and report every request",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument(
        "--break",
        dest="break_colour",
        choices=("green",),
        help="green starts answering 500 to every second request when its weight reaches "
        "50 %%: shows the automatic fallback and its detection time",
    )
    variant.add_argument(
        "--kill",
        dest="kill_colour",
        choices=("green",),
        help="SIGKILL green's process during the 50 %% step: the proxy retries refused "
        "connections on blue and the rollout falls back",
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, metavar="N", help="requests per second (200)"
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=50_000,
        metavar="N",
        help="orders seeded before the rollout (50000)",
    )
    parser.add_argument(
        "--bake", default="5s", metavar="DURATION", help="bake time of each step (5s)"
    )
    parser.add_argument(
        "--grace",
        default="3s",
        metavar="DURATION",
        help="contract grace after blue drained (3s; production: a day)",
    )
    parser.add_argument(
        "--timeout",
        metavar="DURATION",
        help="abort the rollout if it has not finished by then "
        "(default: 3 x bake + grace + 90s + 10s per 100,000 rows)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL server to create the demo's database on (default: $DATABASE_URL, "
        "else an embedded server)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the logs, generated config, state file and database afterwards",
    )
    add_output_option(parser)
    parser.set_defaults(handler=run)


def options_from(args: argparse.Namespace) -> DemoOptions:
    """The :class:`~bluegreen.demo.run.DemoOptions` the arguments ask for."""
    from bluegreen.demo.run import DemoOptions
    from bluegreen.demo.variants import Action, Variant

    if args.break_colour:
        variant = Variant(Action.BREAK, args.break_colour)
    elif args.kill_colour:
        variant = Variant(Action.KILL, args.kill_colour)
    else:
        variant = Variant()
    return DemoOptions(
        variant=variant,
        rate=args.rate,
        rows=args.rows,
        bake=parse_duration(args.bake, "--bake"),
        grace=parse_duration(args.grace, "--grace"),
        timeout=parse_duration(args.timeout, "--timeout") if args.timeout else None,
        database_url=args.database_url or os.environ.get("DATABASE_URL") or None,
        keep=args.keep,
    )


def run(args: argparse.Namespace) -> int:
    """Handler: run the demo, print the report; the exit code (see the epilog)."""
    from bluegreen.logs import configure_logging

    options = options_from(args)
    # The demo's own library logs (process starts, migrations) stay off stdout.
    configure_logging(stream=sys.stderr, level="warning")
    return asyncio.run(_main(options, args.output))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _main(options: DemoOptions, output: str) -> int:
    from bluegreen.demo.processes import cancel_on_signals
    from bluegreen.demo.report import render_text
    from bluegreen.demo.run import run_demo

    async with cancel_on_signals((signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) as seen:
        try:
            result = await run_demo(options, _say)
        except asyncio.CancelledError:
            if seen:
                _say(f"bluegreen demo: interrupted ({signal.Signals(seen[0]).name}); stopped")
                return 128 + seen[0]
            raise
    if output == "json":
        sys.stdout.write(json.dumps(result.to_dict(), separators=(",", ":")) + "\n")
    else:
        sys.stdout.write("\n" + render_text(result.report))
    sys.stdout.flush()
    return EXIT_OK if result.report.ok else EXIT_FAILED
