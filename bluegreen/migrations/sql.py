"""SQL statements split by PostgreSQL's own parser (pglast), never by ``;``.

Each statement keeps its text, the file line it starts on, its parse tree and
the ``-- bluegreen:`` directives that apply to it: the ones on the lines
before it (after the previous statement), or on the line where the previous
statement ended belongs to that previous statement (a trailing comment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pglast
from pglast.parser import ParseError

from bluegreen.errors import MigrationFileError
from bluegreen.migrations.files import Directive, parse_directive


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement of a file."""

    text: str
    line: int
    node: Any  # a pglast.ast.Node (the RawStmt's .stmt)
    directives: tuple[Directive, ...] = ()

    @property
    def kind(self) -> str:
        """The parse-tree node name, e.g. ``IndexStmt``."""
        return type(self.node).__name__

    def directive(self, name: str) -> Directive | None:
        """The first directive called ``name`` attached to this statement."""
        return next((d for d in self.directives if d.name == name), None)


def _directives_in(text: str, first_line: int) -> list[Directive]:
    """Directives in the text between two statements (which may start with ``;``)."""
    found = []
    for offset, line in enumerate(text.split("\n")):
        parsed = parse_directive(line.lstrip().lstrip(";"))
        if parsed is not None:
            found.append(Directive(parsed[0], parsed[1], first_line + offset))
    return found


def parse_statements(sql: str, *, first_line: int = 1, source: str = "<sql>") -> list[Statement]:
    """Split ``sql`` into statements; ``first_line`` is the file line of ``sql[0]``.

    Raises :class:`MigrationFileError` (``source:line: ...``) on a syntax error.
    """
    try:
        raw_statements = pglast.parse_sql(sql)
    except ParseError as exc:
        # pglast's ParseError carries (message, character index)
        message = str(exc.args[0]) if exc.args else str(exc)
        location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line = first_line + sql.count("\n", 0, location)
        raise MigrationFileError(f"{source}:{line}: SQL syntax error: {message}") from None

    def line_of(offset: int) -> int:
        return first_line + sql.count("\n", 0, offset)

    spans: list[tuple[int, int, Any]] = []
    for raw in raw_statements:
        start = raw.stmt_location or 0
        length = raw.stmt_len or (len(sql) - start)
        spans.append((start, start + length, raw.stmt))

    attached: list[list[Directive]] = [[] for _ in spans]
    previous_end = 0
    for index, (start, _end, _node) in enumerate(spans):
        gap = sql[previous_end:start]
        for directive in _directives_in(gap, line_of(previous_end)):
            trailing = index > 0 and directive.line == line_of(spans[index - 1][1])
            attached[index - 1 if trailing else index].append(directive)
        previous_end = spans[index][1]
    if spans:
        tail_start = spans[-1][1]
        for directive in _directives_in(sql[tail_start:], line_of(tail_start)):
            if directive.line == line_of(tail_start):
                attached[-1].append(directive)

    statements = []
    for (start, end, node), directives in zip(spans, attached, strict=True):
        text = sql[start:end].strip()
        # pglast reports the location of the statement itself; skip leading blanks
        leading = len(sql[start:end]) - len(sql[start:end].lstrip())
        statements.append(Statement(text, line_of(start + leading), node, tuple(directives)))
    return statements
