"""Migration files: discovery, parsing and validation.

A migration is one plain SQL file named ``<version>_<name>.sql`` (the version
is a number: ``0001`` or a timestamp ``20240101120000``). The format is close to
dbmate's, with a phase header::

    -- bluegreen:phase expand
    -- bluegreen:up
    ALTER TABLE orders ADD COLUMN status_code varchar(20);

    -- bluegreen:down
    ALTER TABLE orders DROP COLUMN status_code;

Directives are comment lines ``-- bluegreen:<name> [arguments]``:

``phase expand|migrate|contract``  required, in the header (before ``up``)
``irreversible <reason>``          header; says on purpose that there is no down
``lock-timeout <duration>``        header; overrides the runner's lock_timeout
``statement-timeout <duration>``   header; overrides the runner's statement_timeout
                                   (durations: ``500ms``, ``2s``, ``5min``, ``1h``; ``0`` = none)
``up`` / ``down``                  start the sections; ``up`` once, ``down`` at most once
``backfill [NAME=VALUE ...]``      inside a section, before an UPDATE: run it in short
                                   batches, each its own transaction (see below)
``ignore <rule-id> <reason>``      inside a section, before (or on the line of) a
                                   statement: silence one lint finding

Backfill arguments (all optional; :mod:`bluegreen.migrations.backfill` runs it)::

    key=COL                  the column batches walk by: NOT NULL, first column of a
                             valid btree index (default: the single-column primary key;
                             without one, heap pages, which needs a WHERE clause)
    batch-size=N             rows per batch, 1..1000000 (default 1000)
    pause=DURATION           sleep between batches (default 10ms; 0 = none)
    max-lag=DURATION         replica replay lag above which batches wait (default 10s)
    max-lock-waiters=N       sessions waiting on the table's locks above which batches
                             wait, 0..10000 (default 3)
    max-throttle=DURATION    how long batches may keep waiting before the backfill stops
                             (default 5min; a rerun resumes)
    lock-timeout=DURATION    lock_timeout of each batch (default 2s)
    statement-timeout=DURATION
                             statement_timeout of each batch; a timeout halves the
                             batch (default 30s)

for example ``-- bluegreen:backfill key=id batch-size=5000 pause=20ms max-lag=5s``.

A file without a down section is irreversible; ``status`` and ``plan`` say so.
A down section with only comments (``-- nothing to undo: the column goes away
with 0007``) is reversible and has nothing to run: the comment says why.
Every problem raises :class:`MigrationFileError` starting with ``file:line``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from bluegreen.errors import MigrationFileError

DIRECTIVE_PREFIX: Final = "bluegreen:"
_DIRECTIVE_LINE = re.compile(r"^\s*--\s*bluegreen:([A-Za-z][A-Za-z0-9_-]*)\s*(.*?)\s*$")
_FILE_NAME = re.compile(r"^(\d+)_([A-Za-z0-9][A-Za-z0-9_.-]*)\.sql$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?$")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, None: 1.0}
HEADER_DIRECTIVES: Final = frozenset({"phase", "irreversible", "lock-timeout", "statement-timeout"})
SECTION_DIRECTIVES: Final = frozenset({"up", "down"})
STATEMENT_DIRECTIVES: Final = frozenset({"backfill", "ignore"})


class Phase(StrEnum):
    """Expand-migrate-contract: the order phases run in during a rollout."""

    EXPAND = "expand"
    MIGRATE = "migrate"
    CONTRACT = "contract"


@dataclass(frozen=True, slots=True)
class Directive:
    """One ``-- bluegreen:name args`` comment and where it is."""

    name: str
    args: str
    line: int


@dataclass(frozen=True, slots=True)
class Section:
    """The SQL of an up or down section and the file line it starts on."""

    sql: str
    first_line: int

    @property
    def note(self) -> str:
        """Its first comment, lines joined ("" if none): what a down section that has
        only comments says about why there is nothing to undo."""
        words: list[str] = []
        for line in self.sql.split("\n"):
            text = line.strip()
            if not text.startswith("--") or parse_directive(text) is not None:
                if words:
                    break
                continue
            text = text.lstrip("-").strip()
            if text:
                words.append(text)
            elif words:
                break  # an empty "--" line ends the paragraph
        return " ".join(words)


@dataclass(frozen=True, slots=True)
class MigrationFile:
    """A parsed migration file."""

    version: int
    name: str
    path: Path
    phase: Phase
    up: Section
    down: Section | None
    checksum: str
    irreversible_reason: str | None = None
    lock_timeout: str | None = None
    statement_timeout: str | None = None
    header: tuple[Directive, ...] = field(default=())

    @property
    def label(self) -> str:
        """The file name without ``.sql`` (``0001_add_status_code``)."""
        return self.path.stem

    @property
    def reversible(self) -> bool:
        """Whether the migration has a down section (one with only comments counts: it
        says there is nothing to undo)."""
        return self.down is not None

    @property
    def lock_timeout_seconds(self) -> float | None:
        """The header's ``lock-timeout`` in seconds, or None when not given."""
        return None if self.lock_timeout is None else parse_duration(self.lock_timeout)

    @property
    def statement_timeout_seconds(self) -> float | None:
        """The header's ``statement-timeout`` in seconds, or None when not given."""
        return None if self.statement_timeout is None else parse_duration(self.statement_timeout)

    def section(self, direction: str) -> Section | None:
        """The ``"up"`` or ``"down"`` section."""
        if direction not in SECTION_DIRECTIVES:
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        return self.up if direction == "up" else self.down


def parse_duration(text: str) -> float:
    """Seconds from ``500ms``, ``2s``, ``5min`` (or ``5m``), ``1h``; a bare number is seconds.

    Raises ValueError for anything else.
    """
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"expected a duration like 2s, 500ms or 5min, got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def checksum_of(text: str) -> str:
    """SHA-256 of the file text with line endings normalised to LF."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def parse_directive(line: str) -> tuple[str, str] | None:
    """``(name, args)`` if the line is a bluegreen directive comment, else None."""
    match = _DIRECTIVE_LINE.match(line)
    if match is None:
        return None
    return match.group(1).lower(), match.group(2)


def _is_sql_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("--")


def parse_migration(path: Path, text: str | None = None) -> MigrationFile:
    """Parse one migration file (``text`` defaults to reading ``path``)."""
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise MigrationFileError(
            f"{path}:1: file name must be <version>_<name>.sql, e.g. 0001_add_status_code.sql",
            migration=path.name,
        )
    if int(match.group(1)) == 0:
        raise MigrationFileError(
            f"{path}:1: version 0 is reserved ('down --to 0' means before the first "
            "migration); start at 1",
            migration=path.stem,
        )
    if text is None:
        try:
            text = path.read_text(encoding="utf-8-sig")  # a BOM is not SQL
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationFileError(f"{path}:1: cannot read: {exc}", migration=path.stem) from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")

    def fail(line_no: int, problem: str) -> MigrationFileError:
        return MigrationFileError(f"{path}:{line_no}: {problem}", migration=path.stem)

    header: list[Directive] = []
    sections: dict[str, tuple[int, list[str]]] = {}
    current: str | None = None
    for index, line in enumerate(lines):
        line_no = index + 1
        parsed = parse_directive(line)
        if parsed is None:
            if current is None:
                if _is_sql_content(line):
                    raise fail(line_no, "SQL before '-- bluegreen:up'; put statements in a section")
            else:
                sections[current][1].append(line)
            continue
        name, args = parsed
        if name in SECTION_DIRECTIVES:
            if args:
                raise fail(line_no, f"'-- bluegreen:{name}' takes no arguments, got {args!r}")
            if name in sections:
                raise fail(line_no, f"second '-- bluegreen:{name}' section; a file has one")
            if name == "down" and "up" not in sections:
                raise fail(line_no, "'-- bluegreen:down' before '-- bluegreen:up'")
            current = name
            sections[name] = (line_no + 1, [])
        elif name in HEADER_DIRECTIVES:
            if current is not None:
                raise fail(line_no, f"'-- bluegreen:{name}' belongs in the header, before 'up'")
            header.append(Directive(name, args, line_no))
        elif name in STATEMENT_DIRECTIVES:
            if current is None:
                raise fail(line_no, f"'-- bluegreen:{name}' must be inside the up or down section")
            sections[current][1].append(line)
        else:
            known = ", ".join(sorted(HEADER_DIRECTIVES | SECTION_DIRECTIVES | STATEMENT_DIRECTIVES))
            raise fail(line_no, f"unknown directive '-- bluegreen:{name}'; known: {known}")

    values: dict[str, Directive] = {}
    for directive in header:
        if directive.name in values:
            raise fail(directive.line, f"'-- bluegreen:{directive.name}' given twice")
        values[directive.name] = directive
    phase_directive = values.get("phase")
    if phase_directive is None:
        raise fail(1, "no phase; start the file with '-- bluegreen:phase expand|migrate|contract'")
    try:
        phase = Phase(phase_directive.args.lower())
    except ValueError:
        raise fail(
            phase_directive.line,
            f"unknown phase {phase_directive.args!r}; use expand, migrate or contract",
        ) from None
    if "up" not in sections:
        raise fail(len(lines), "no '-- bluegreen:up' section")
    up_line, up_lines = sections["up"]
    up = Section("\n".join(up_lines), up_line)
    if not any(_is_sql_content(line) for line in up_lines):
        raise fail(up_line - 1, "the up section is empty")
    down: Section | None = None
    if "down" in sections:
        down_line, down_lines = sections["down"]
        if not any(line.strip() for line in down_lines):
            # Neither "irreversible" nor "nothing to undo" can be assumed: say which.
            raise fail(
                down_line - 1,
                "the down section is empty. Write the SQL that undoes the up section, or a "
                "comment saying why there is nothing to undo ('-- nothing to undo: ...'); "
                "if it cannot be undone, remove the section and add "
                "'-- bluegreen:irreversible <reason>' to the header",
            )
        down = Section("\n".join(down_lines), down_line)
    irreversible = values.get("irreversible")
    if irreversible is not None:
        if down is not None:
            raise fail(irreversible.line, "marked irreversible but has a down section; pick one")
        if not irreversible.args:
            raise fail(irreversible.line, "'-- bluegreen:irreversible' needs a reason")
    for option in ("lock-timeout", "statement-timeout"):
        if option in values:
            try:
                parse_duration(values[option].args)
            except ValueError:
                raise fail(
                    values[option].line,
                    f"'-- bluegreen:{option}' needs a duration like 5s, 500ms or 2min, "
                    f"got {values[option].args!r}",
                ) from None
    return MigrationFile(
        version=int(match.group(1)),
        name=match.group(2),
        path=path,
        phase=phase,
        up=up,
        down=down,
        checksum=checksum_of(text),
        irreversible_reason=irreversible.args if irreversible else None,
        lock_timeout=values["lock-timeout"].args if "lock-timeout" in values else None,
        statement_timeout=(
            values["statement-timeout"].args if "statement-timeout" in values else None
        ),
        header=tuple(header),
    )


def load_directory(directory: Path) -> list[MigrationFile]:
    """All migrations of a directory, ordered by version; duplicates are errors."""
    if not directory.is_dir():
        raise MigrationFileError(
            f"{directory}: migrations directory not found; create it or pass --dir",
        )
    migrations = [parse_migration(p) for p in sorted(directory.glob("*.sql")) if p.is_file()]
    migrations.sort(key=lambda m: m.version)
    for previous, current in itertools.pairwise(migrations):
        if previous.version == current.version:
            raise MigrationFileError(
                f"{current.path}:1: duplicate version {current.version} "
                f"(also {previous.path.name}); give each migration its own version",
                migration=current.label,
            )
    return migrations
