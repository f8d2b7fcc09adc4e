"""The lint engine: SQL text in, findings out. PURE: no I/O, no clock.

Statements are split by PostgreSQL's parser (:func:`parse_statements`) and
walked in order with a :class:`Context`. Every rule looks at every statement
(``check(stmt, ctx)``); then the context records what the statement did, so
later statements know which tables are new, which constraints are validated
and which locks their transaction already holds. A finding is dropped when
its statement carries ``-- bluegreen:ignore <rule-id> <reason>``; the two
rules about ignore directives themselves cannot be silenced.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Final

from bluegreen.errors import MigrationFileError
from bluegreen.migrations.files import MigrationFile, Phase, parse_directive, parse_migration
from bluegreen.migrations.lint.context import Context, SchemaFacts, ignores
from bluegreen.migrations.lint.locks import LockInfo
from bluegreen.migrations.lint.rule import Finding
from bluegreen.migrations.lint.rules import CHECKS, RULE_IDS
from bluegreen.migrations.sql import Statement, parse_statements

# Findings about ignore directives can't be ignored (an ignore could otherwise silence itself).
UNSILENCEABLE: Final = frozenset({"require-ignore-reason", "ban-unknown-ignore-rule"})


def lint_statements(
    statements: Sequence[Statement],
    *,
    path: str = "<sql>",
    phase: Phase | None = None,
    migration: bool = False,
    facts: SchemaFacts | None = None,
) -> list[Finding]:
    """Findings for already-parsed statements of one file, in statement order.

    ``migration``: the statements are the up section of a bluegreen migration
    file (the runner's transaction grouping applies). ``facts``: what earlier
    files established; it is updated in place.
    """
    ctx = Context(
        statements,
        path=path,
        phase=phase,
        migration=migration,
        facts=facts,
        known_rules=RULE_IDS,
    )
    findings: list[Finding] = []
    for stmt in _walk(statements, ctx):
        silenced = {rule for ignore in ignores(stmt) for rule in ignore.rules}
        for _rule, check in CHECKS:
            for finding in check(stmt, ctx):
                if finding.rule_id in silenced and finding.rule_id not in UNSILENCEABLE:
                    continue
                findings.append(finding)
    return findings


def _walk(statements: Sequence[Statement], ctx: Context) -> Iterator[Statement]:
    """Each statement in order, with ``ctx`` entered on it; what it did is recorded
    (``ctx.leave``) when the caller asks for the next one."""
    for index, stmt in enumerate(statements):
        ctx.enter(index, stmt)
        yield stmt
        ctx.leave(stmt)


def statement_locks(
    statements: Sequence[Statement],
    *,
    path: str = "<sql>",
    phase: Phase | None = None,
    migration: bool = False,
    facts: SchemaFacts | None = None,
) -> list[LockInfo]:
    """The lock each statement takes, as the rules see it: with what earlier
    statements of the file and ``facts`` (earlier files; updated in place)
    established, where :func:`~bluegreen.migrations.lint.locks.lock_for` on a
    statement alone has to assume."""
    ctx = Context(statements, path=path, phase=phase, migration=migration, facts=facts)
    return [ctx.lock for _stmt in _walk(statements, ctx)]


def section_locks(
    migrations: Sequence[MigrationFile],
    *,
    up: Collection[int] = (),
    down: Sequence[int] = (),
) -> dict[tuple[int, str], list[LockInfo]]:
    """The locks of the statements of some migrations' sections, keyed ``(version,
    "up"|"down")``, one per statement in order (for ``migrate plan``).

    The up sections are walked in version order with shared :class:`SchemaFacts`,
    as :func:`lint_migrations` does, so a type change's old type, a validated
    CHECK or a function's volatility found in an earlier file (or statement)
    makes the rewrite and scan answers exact. ``up``: versions whose up
    sections are wanted. ``down``: versions whose down sections are wanted, in
    the order they run (newest first), walked after the up sections of every
    file up to the newest of them. A file that is not wanted and does not parse
    only contributes no facts.
    """
    wanted_up = set(up)
    last = max([*wanted_up, *down], default=None)
    if last is None:
        return {}
    by_version = {m.version: m for m in migrations}
    facts = SchemaFacts()
    found: dict[tuple[int, str], list[LockInfo]] = {}
    for m in sorted(migrations, key=lambda m: m.version):
        if m.version > last:
            break
        try:
            statements = parse_statements(m.up.sql, first_line=m.up.first_line, source=str(m.path))
        except MigrationFileError:
            if m.version in wanted_up:
                raise
            continue
        locks = statement_locks(
            statements, path=str(m.path), phase=m.phase, migration=True, facts=facts
        )
        if m.version in wanted_up:
            found[(m.version, "up")] = locks
    for version in down:
        m = by_version[version]
        if m.down is None:
            continue
        statements = parse_statements(m.down.sql, first_line=m.down.first_line, source=str(m.path))
        found[(version, "down")] = statement_locks(
            statements, path=str(m.path), phase=m.phase, migration=True, facts=facts
        )
    return found


def lint_sql(
    sql: str,
    *,
    path: str = "<sql>",
    first_line: int = 1,
    phase: Phase | None = None,
    facts: SchemaFacts | None = None,
) -> list[Finding]:
    """Findings for plain SQL (``first_line``: the file line of ``sql[0]``).

    ``phase`` applies the phase rules as if the SQL were a migration of that
    phase. Raises :class:`MigrationFileError` (``path:line: ...``) on a syntax
    error.
    """
    statements = parse_statements(sql, first_line=first_line, source=path)
    return lint_statements(statements, path=path, phase=phase, facts=facts)


def lint_migration(m: MigrationFile, *, facts: SchemaFacts | None = None) -> list[Finding]:
    """Findings for the up section of a bluegreen migration file."""
    path = str(m.path)
    statements = parse_statements(m.up.sql, first_line=m.up.first_line, source=path)
    return lint_statements(statements, path=path, phase=m.phase, migration=True, facts=facts)


def lint_migrations(
    migrations: Sequence[MigrationFile], *, only: Collection[int] | None = None
) -> list[Finding]:
    """Findings for a set of migrations, linted in version order with shared facts.

    A CHECK validated by one migration lets a later one SET NOT NULL; the type
    a column was created with decides whether a later type change rewrites.
    ``only``: report findings for these versions only (the others still
    contribute facts), e.g. the pending migrations of ``migrate up``.
    """
    facts = SchemaFacts()
    findings: list[Finding] = []
    for migration in sorted(migrations, key=lambda m: m.version):
        found = lint_migration(migration, facts=facts)
        if only is None or migration.version in only:
            findings.extend(found)
    return findings


def has_phase_header(text: str) -> bool:
    """Whether a file is a bluegreen migration (it has a ``-- bluegreen:phase`` line)."""
    return any(_is_directive(line, "phase") for line in text.splitlines())


def lint_text(text: str, *, path: str, phase: Phase | None = None) -> list[Finding]:
    """Findings for one file's text: a migration file if it has a phase header, else plain SQL.

    ``phase`` (from ``--phase``) applies to plain SQL; a migration file's own
    header wins. A migration file whose name is not ``<version>_<name>.sql``
    is still linted (it just cannot be run), and so is a file with a phase
    header but no ``-- bluegreen:up`` line (all of it is taken as the up section).
    """
    header_phase = phase_header(text, path=path)
    if header_phase is None:
        return lint_sql(up_section(text), path=path, phase=phase)
    if not any(_is_directive(line, "up") for line in text.splitlines()):
        statements = parse_statements(text, source=path)
        return lint_statements(statements, path=path, phase=header_phase, migration=True)
    file_path = Path(path)
    try:
        migration = parse_migration(file_path, text)
    except MigrationFileError as exc:
        if not str(exc).endswith("e.g. 0001_add_status_code.sql"):
            raise
        # Lint a well-formed file under a stand-in name; report the real one.
        stand_in = file_path.with_name("1_lint.sql")
        try:
            migration = parse_migration(stand_in, text)
        except MigrationFileError as inner:
            raise MigrationFileError(str(inner).replace(str(stand_in), path)) from None
        migration = _renamed(migration, file_path)
    return lint_migration(migration)


# Up/down markers of other tools' single-file migrations (goose, sql-migrate, dbmate).
_UP_MARKER = re.compile(r"^\s*--\s*(\+goose\s+up|\+migrate\s+up|migrate:up)\b", re.IGNORECASE)
_DOWN_MARKER = re.compile(
    r"^\s*--\s*(\+goose\s+down|\+migrate\s+down|migrate:down)\b", re.IGNORECASE
)
# psql meta-commands (\set ON_ERROR_STOP on, \timing): client commands, not SQL.
_PSQL_COMMAND = re.compile(r"^\\[a-zA-Z!]")


def up_section(text: str) -> str:
    """The text with down sections and psql meta-commands blanked (line numbers kept).

    goose (``-- +goose Down``), sql-migrate (``-- +migrate Down``) and dbmate
    (``-- migrate:down``) keep the rollback in the same file; it does not run
    on the way up, so it is not linted.
    """
    lines = text.split("\n")
    down = False
    changed = False
    for index, line in enumerate(lines):
        if _UP_MARKER.match(line):
            down = False
        elif _DOWN_MARKER.match(line):
            down = True
        if (down or _PSQL_COMMAND.match(line)) and line:
            lines[index] = ""
            changed = True
    return "\n".join(lines) if changed else text


def _is_directive(line: str, name: str) -> bool:
    parsed = parse_directive(line)
    return parsed is not None and parsed[0] == name


def phase_header(text: str, *, path: str = "<sql>") -> Phase | None:
    """The phase a ``-- bluegreen:phase`` line names (None: not a migration file).

    Raises :class:`MigrationFileError` for an unknown phase.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = parse_directive(line)
        if parsed is not None and parsed[0] == "phase":
            try:
                return Phase(parsed[1].strip().lower())
            except ValueError:
                raise MigrationFileError(
                    f"{path}:{number}: unknown phase {parsed[1]!r}; use expand, migrate or contract"
                ) from None
    return None


def _renamed(migration: MigrationFile, path: Path) -> MigrationFile:
    from dataclasses import replace

    return replace(migration, path=path)
