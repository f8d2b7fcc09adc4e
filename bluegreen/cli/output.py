"""Shared output helpers for commands: human tables or one JSON document."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO


def add_output_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--output text|json`` to a command whose result is data."""
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="text for people (default), json for scripts",
    )


def emit(
    data: Any,
    output: str,
    render_text: Callable[[Any], str],
    *,
    stream: TextIO | None = None,
) -> None:
    """Print ``data`` as JSON or through ``render_text``."""
    out = stream or sys.stdout
    if output == "json":
        out.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    else:
        text = render_text(data)
        out.write(text if text.endswith("\n") or not text else text + "\n")
    out.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a left-aligned plain-text table."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)
