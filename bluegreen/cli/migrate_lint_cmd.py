"""``bluegreen migrate lint``: check SQL migrations for locking and compatibility hazards.

Exit codes: 0 no hazard, 1 hazards found, 2 usage error or a file that cannot
be read or parsed (the message names file:line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bluegreen.cli.output import add_output_option, emit, table
from bluegreen.errors import MigrationFileError
from bluegreen.migrations.files import Phase
from bluegreen.migrations.lint.context import SchemaFacts
from bluegreen.migrations.lint.paths import expand_paths, lint_file
from bluegreen.migrations.lint.rule import Finding
from bluegreen.migrations.lint.rules import RULES

EXIT_OK = 0
EXIT_HAZARDS = 1
EXIT_USAGE = 2
DEFAULT_DIR = "migrations"


def register(migrate_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``lint`` to the ``bluegreen migrate`` subcommands."""
    parser: argparse.ArgumentParser = migrate_subparsers.add_parser(
        "lint",
        help="check migrations for locking and compatibility hazards",
        description=(
            "Check SQL files for statements that block the application (locks held during a "
            "rewrite or a scan) or break the code still running (renames, drops outside "
            "contract). Plain .sql files and bluegreen migration files (with a "
            "'-- bluegreen:phase' header, whose up section is checked with the phase rules); "
            "a directory means every .sql file under it. Silence one finding with "
            "'-- bluegreen:ignore <rule-id> <reason>' on the line before the statement. "
            "Exit status: 0 no hazard, 1 hazards found, 2 usage or parse error."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help=f"files or directories to check (default: {DEFAULT_DIR}/)",
    )
    parser.add_argument(
        "--phase",
        choices=[p.value for p in Phase],
        help="check plain SQL files as migrations of this phase (a file's own header wins)",
    )
    parser.add_argument(
        "--rules", action="store_true", help="list the rules (id, lock, summary) and exit"
    )
    add_output_option(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handle ``bluegreen migrate lint``."""
    if args.rules:
        emit([_rule_dict(r) for r in RULES], args.output, _render_rules)
        return EXIT_OK
    raw_paths: Sequence[str] = args.paths or [DEFAULT_DIR]
    phase = Phase(args.phase) if args.phase else None
    try:
        files = expand_paths(raw_paths)
    except MigrationFileError as exc:
        print(f"bluegreen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    findings: list[Finding] = []
    errors: list[str] = []
    facts: dict[Path, SchemaFacts] = {}
    for path in files:
        try:
            findings.extend(
                lint_file(path, phase=phase, facts=facts.setdefault(path.parent, SchemaFacts()))
            )
        except MigrationFileError as exc:
            errors.append(str(exc))
    report = {
        "files": len(files),
        "hazards": len(findings),
        "errors": errors,
        "findings": [f.to_dict() for f in findings],
    }
    emit(report, args.output, lambda _: _render(findings, len(files), len(errors)))
    for error in errors:
        print(f"bluegreen: {error}", file=sys.stderr)
    if errors:
        return EXIT_USAGE
    return EXIT_HAZARDS if findings else EXIT_OK


def _render(findings: Sequence[Finding], files: int, errors: int = 0) -> str:
    checked = f"{files - errors} file{'s' if files - errors != 1 else ''} checked"
    if errors:
        checked += f"; {errors} could not be parsed, see below"
    if not findings:
        return f"no hazards ({checked})"
    blocks = [f.format() for f in findings]
    affected = len({f.path for f in findings})
    plural = "s" if len(findings) != 1 else ""
    summary = (
        f"{len(findings)} hazard{plural} in {affected} file{'s' if affected != 1 else ''} "
        f"({checked}). Docs: docs/rules/<rule-id>.md"
    )
    return "\n\n".join([*blocks, summary])


def _rule_dict(rule: Any) -> dict[str, str]:
    return {"id": rule.id, "lock": rule.lock, "summary": rule.summary}


def _render_rules(rules: Sequence[dict[str, str]]) -> str:
    return table(["RULE", "SUMMARY"], [[r["id"], r["summary"]] for r in rules])
