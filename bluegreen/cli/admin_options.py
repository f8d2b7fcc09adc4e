"""What the commands that talk to a running admin API share: client options, error exits.

``status``/``weights``/``flags`` (:mod:`bluegreen.cli.control_cmd`) and
``rollout`` (:mod:`bluegreen.cli.rollout_cmd`) add the same three options and
turn the same two client errors into exit codes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection

from bluegreen.admin_client import DEFAULT_URL, TOKEN_ENV, URL_ENV, AdminClient
from bluegreen.cli import EXIT_FAILED, EXIT_USAGE
from bluegreen.errors import AdminRequestError, AdminUnreachableError

Handler = Callable[[argparse.Namespace], int]


def add_client_options(
    parser: argparse.ArgumentParser, *, api_of: str, auth_help: str, timeout: float
) -> None:
    """Add ``--admin-url`` ("admin API of <api_of>"), ``--token`` and ``--timeout``."""
    parser.add_argument(
        "--admin-url",
        metavar="URL",
        help=f"admin API of {api_of} (env {URL_ENV}; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", help=f"{auth_help} (env {TOKEN_ENV} is safer: flags show up in ps)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=timeout,
        metavar="SECONDS",
        help=f"per request (default {timeout:g})",
    )


def client_from_args(args: argparse.Namespace) -> AdminClient:
    """The admin API client that the options of :func:`add_client_options` describe."""
    return AdminClient.from_env(args.admin_url, args.token, args.timeout)


def guarded(*, usage_statuses: Collection[int] = ()) -> Callable[[Handler], Handler]:
    """Decorate a handler: admin-API failures become a one-line message and an exit code.

    An unreachable API exits 2; a refused request exits 1, or 2 when its status is
    one of ``usage_statuses``. When the refusal lists the commands ``allowed`` instead
    (the rollout endpoints' 409), they are printed too.
    """

    def decorate(command: Handler) -> Handler:
        def run(args: argparse.Namespace) -> int:
            try:
                return command(args)
            except AdminUnreachableError as exc:
                print(f"bluegreen: {exc}", file=sys.stderr)
                return EXIT_USAGE
            except AdminRequestError as exc:
                print(f"bluegreen: {exc}", file=sys.stderr)
                allowed = exc.body.get("allowed") if isinstance(exc.body, dict) else None
                if allowed is not None:
                    print(
                        f"bluegreen: allowed now: {', '.join(allowed) or 'nothing'}",
                        file=sys.stderr,
                    )
                return EXIT_USAGE if exc.status in usage_statuses else EXIT_FAILED

        run.__doc__ = command.__doc__
        return run

    return decorate
