"""The ``bluegreen`` command line.

Each command group lives in its own module exposing ``register(subparsers)``;
handlers take the parsed arguments and return the process exit code:
0 success, 1 the operation failed (rollout rolled back, hazards found,
migration failed), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bluegreen import __version__
from bluegreen.errors import BluegreenError, ConfigError, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Command modules, in the order their commands appear in --help.
_COMMAND_MODULES = (
    "bluegreen.cli.serve_cmd",
    "bluegreen.cli.control_cmd",
    "bluegreen.cli.rollout_cmd",
    "bluegreen.cli.migrate_cmd",
    "bluegreen.cli.demo_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered command group."""
    parser = argparse.ArgumentParser(
        prog="bluegreen",
        description="Zero-downtime blue/green rollouts for HTTP applications on PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"bluegreen {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except (ConfigError, UsageError) as exc:
        print(f"bluegreen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BluegreenError as exc:
        print(f"bluegreen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return code
