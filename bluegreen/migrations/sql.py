"""SQL statements split by PostgreSQL's own parser (pglast), never by ``;``.

Each statement keeps its text, the file line it starts on, its parse tree and
the ``-- bluegreen:`` directives that apply to it. Directives are found with
PostgreSQL's scanner, so a ``-- bluegreen:`` inside a string or a
dollar-quoted function body is text, not a directive. A directive applies to:

* the statement it sits inside (a comment between the lines of a statement);
* the previous statement when it is on the line where that statement ended
  (a trailing comment: ``UPDATE ...; -- bluegreen:ignore rule why``);
* otherwise the next statement. A directive with no statement after it is an
  error: it would silently do nothing.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pglast
from pglast.parser import ParseError, scan

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


class LineIndex:
    """File line numbers of offsets in a text, from a table of its newline offsets.

    Built once per text (one pass), then each lookup is a binary search: counting
    the newlines from the start for every statement made parsing a big file
    quadratic.
    """

    __slots__ = ("_first_line", "_newlines")

    def __init__(self, text: str, first_line: int = 1) -> None:
        self._first_line = first_line
        newlines = []
        find = text.find
        position = find("\n")
        while position != -1:
            newlines.append(position)
            position = find("\n", position + 1)
        self._newlines = newlines

    def line_of(self, offset: int) -> int:
        """The line of ``text[offset]`` (``first_line`` plus the newlines before it)."""
        return self._first_line + bisect_left(self._newlines, offset)


def _syntax_error(exc: ParseError, lines: LineIndex, source: str) -> MigrationFileError:
    # pglast's ParseError carries (message, character index)
    message = str(exc.args[0]) if exc.args else str(exc)
    location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
    return MigrationFileError(f"{source}:{lines.line_of(location)}: SQL syntax error: {message}")


def parse_statements(sql: str, *, first_line: int = 1, source: str = "<sql>") -> list[Statement]:
    """Split ``sql`` into statements; ``first_line`` is the file line of ``sql[0]``.

    Raises :class:`MigrationFileError` (``source:line: ...``) on a syntax error
    or a directive that no statement follows.
    """
    lines = LineIndex(sql, first_line)
    try:
        raw_statements = pglast.parse_sql(sql)
        tokens = scan(sql)
    except ParseError as exc:
        raise _syntax_error(exc, lines, source) from None
    line_of = lines.line_of

    # (start, end) of each statement's own text, without leading blanks/comments
    starts: list[int] = []
    ends: list[int] = []
    nodes: list[Any] = []
    for raw in raw_statements:
        start = raw.stmt_location or 0
        length = raw.stmt_len or (len(sql) - start)
        chunk = sql[start : start + length]
        start += len(chunk) - len(chunk.lstrip())
        starts.append(start)
        ends.append(start + len(chunk.strip()))
        nodes.append(raw.stmt)

    attached: list[list[Directive]] = [[] for _ in nodes]
    for token in tokens:
        if token.name != "SQL_COMMENT":
            continue
        parsed = parse_directive(sql[token.start : token.end + 1])
        if parsed is None:
            continue
        directive = Directive(parsed[0], parsed[1], line_of(token.start))
        target = _owner(starts, ends, token.start, directive.line, line_of)
        if target is None:
            raise MigrationFileError(
                f"{source}:{directive.line}: '-- bluegreen:{directive.name}' is not followed "
                "by a statement; put it on the line before the statement it applies to"
            )
        attached[target].append(directive)

    return [
        Statement(sql[start:end], line_of(start), node, tuple(directives))
        for start, end, node, directives in zip(starts, ends, nodes, attached, strict=True)
    ]


def _owner(
    starts: Sequence[int],
    ends: Sequence[int],
    offset: int,
    line: int,
    line_of: Callable[[int], int],
) -> int | None:
    """Index of the statement a directive comment at ``offset`` belongs to.

    ``starts``/``ends``: the statements' spans, in order and not overlapping.
    """
    before = bisect_right(starts, offset) - 1  # the last statement starting at or before it
    if before >= 0 and offset < ends[before]:
        return before  # inside the statement
    if before >= 0 and line_of(ends[before]) == line:
        return before  # trailing comment of the previous statement
    following = before + 1
    return following if following < len(starts) else None
