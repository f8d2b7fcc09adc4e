"""Linting files and directories: the only part of the linter that reads the disk.

A directory lints every ``.sql`` file under it, in name order. Plain SQL
files are linted each on its own; bluegreen migration files (with a
``-- bluegreen:phase`` header) of one directory are linted in version order
with shared schema facts, like the runner applies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from bluegreen.errors import MigrationFileError
from bluegreen.migrations.files import MigrationFile, Phase, parse_migration
from bluegreen.migrations.lint.context import SchemaFacts
from bluegreen.migrations.lint.engine import has_phase_header, lint_migration, lint_text
from bluegreen.migrations.lint.rule import Finding


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files to lint: files as given, directories as every ``*.sql`` under them."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted((p for p in path.rglob("*.sql") if p.is_file()), key=_order))
        elif path.is_file():
            files.append(path)
        else:
            raise MigrationFileError(f"{path}: no such file or directory")
    return files


def _order(path: Path) -> tuple[str, int, str]:
    # Migrations run in version order: 9_x before 10_x even without zero padding.
    version, _, _rest = path.name.partition("_")
    return (str(path.parent), int(version) if version.isdigit() else -1, path.name)


def read_sql(path: Path) -> str:
    """A file's text (UTF-8, a byte-order mark dropped)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationFileError(f"{path}:1: cannot read: {exc}") from None


def lint_file(
    path: Path, *, phase: Phase | None = None, facts: SchemaFacts | None = None
) -> list[Finding]:
    """Findings for one file (see :func:`lint_text`)."""
    text = read_sql(path)
    if facts is not None and has_phase_header(text):
        try:
            migration: MigrationFile | None = parse_migration(path, text)
        except MigrationFileError:
            migration = None
        if migration is not None:
            return lint_migration(migration, facts=facts)
    return lint_text(text, path=str(path), phase=phase)


def lint_paths(paths: Sequence[str | Path], *, phase: Phase | None = None) -> list[Finding]:
    """Findings for files and directories; raises MigrationFileError on the first bad file."""
    findings: list[Finding] = []
    facts: dict[Path, SchemaFacts] = {}
    for path in expand_paths(paths):
        shared = facts.setdefault(path.parent, SchemaFacts())
        findings.extend(lint_file(path, phase=phase, facts=shared))
    return findings
