"""``bluegreen serve``: run the blue/green proxy in the foreground."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bluegreen.config import (
    Config,
    load_config,
    require_upstreams,
    with_admin_token,
    with_overrides,
)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add the ``serve`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the blue/green proxy",
        description=(
            "Run the proxy in the foreground. Flags override the config file, so "
            "`bluegreen serve --listen 127.0.0.1:8080 --blue 127.0.0.1:9001 "
            "--green 127.0.0.1:9002` works without one. SIGTERM or SIGINT drains "
            "in-flight requests (timeouts.drain) and exits 0. Weights and flags live in "
            "the state store (--state); the admin API (--admin) changes them."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config file")
    parser.add_argument("--listen", metavar="HOST:PORT", help="proxy address (listeners.proxy)")
    parser.add_argument(
        "--blue",
        metavar="HOST:PORT",
        action="append",
        help="a blue server; repeat for several (upstreams.blue.servers)",
    )
    parser.add_argument(
        "--green",
        metavar="HOST:PORT",
        action="append",
        help="a green server; repeat for several (upstreams.green.servers)",
    )
    parser.add_argument(
        "--green-weight",
        metavar="PERCENT",
        help="share of traffic for green, 0..100 in 0.01 steps (routing.green_weight); "
        "seeds a new state store only: the stored weights win afterwards",
    )
    parser.add_argument(
        "--state",
        metavar="URL",
        help="state store: file:PATH or postgresql://USER@HOST/DB for several replicas "
        "(state.url; default file:.bluegreen/state.json)",
    )
    parser.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help="admin API address (listeners.admin; default 127.0.0.1:9900; port 0 picks one). "
        "A non-loopback address needs admin.token or BLUEGREEN_ADMIN_TOKEN",
    )
    parser.add_argument(
        "--workers",
        metavar="N|auto",
        help="proxy worker processes (workers; default auto = one per usable CPU). More "
        "than one runs a control process (state, admin API, rollouts) and N data-plane "
        "workers sharing the listener (SO_REUSEPORT); 1 runs everything in one process",
    )
    parser.set_defaults(handler=run)


def build_config(args: argparse.Namespace) -> Config:
    """The config file (or defaults) with the command-line flags applied and checked."""
    config = load_config(args.config) if args.config else Config()
    config = with_overrides(
        config,
        listen=args.listen,
        blue=args.blue,
        green=args.green,
        green_weight=args.green_weight,
        state=args.state,
        admin=args.admin,
        workers=args.workers,
    )
    require_upstreams(config)
    admin_key = "--admin" if args.admin is not None else "listeners.admin"
    return with_admin_token(config, os.environ, admin_key=admin_key)


def run(args: argparse.Namespace) -> int:
    """Handler: serve until a signal; the exit code of the drain."""
    # structlog loads rich whenever it is importable (here only a test dependency),
    # to pretty-print in consoles; serve logs JSON, and rich costs ~6 MB per process.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # None blocks the import
    config = build_config(args)
    # The data plane loads only for this command.
    from bluegreen.replica import ControlPlaneSettings
    from bluegreen.serve import run as serve

    control = ControlPlaneSettings.from_config(
        config,
        state_key="--state" if args.state is not None else "state.url",
        admin_key="--admin" if args.admin is not None else "listeners.admin",
    )
    return serve(config, control=control)
