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


def _syntax_error(exc: ParseError, sql: str, first_line: int, source: str) -> MigrationFileError:
    # pglast's ParseError carries (message, character index)
    message = str(exc.args[0]) if exc.args else str(exc)
    location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
    line = first_line + sql.count("\n", 0, location)
    return MigrationFileError(f"{source}:{line}: SQL syntax error: {message}")


def parse_statements(sql: str, *, first_line: int = 1, source: str = "<sql>") -> list[Statement]:
    """Split ``sql`` into statements; ``first_line`` is the file line of ``sql[0]``.

    Raises :class:`MigrationFileError` (``source:line: ...``) on a syntax error
    or a directive that no statement follows.
    """
    try:
        raw_statements = pglast.parse_sql(sql)
        tokens = scan(sql)
    except ParseError as exc:
        raise _syntax_error(exc, sql, first_line, source) from None

    def line_of(offset: int) -> int:
        return first_line + sql.count("\n", 0, offset)

    # (start, end) of each statement's own text, without leading blanks/comments
    spans: list[tuple[int, int, Any]] = []
    for raw in raw_statements:
        start = raw.stmt_location or 0
        length = raw.stmt_len or (len(sql) - start)
        chunk = sql[start : start + length]
        start += len(chunk) - len(chunk.lstrip())
        spans.append((start, start + len(chunk.strip()), raw.stmt))

    attached: list[list[Directive]] = [[] for _ in spans]
    for token in tokens:
        if token.name != "SQL_COMMENT":
            continue
        parsed = parse_directive(sql[token.start : token.end + 1])
        if parsed is None:
            continue
        directive = Directive(parsed[0], parsed[1], line_of(token.start))
        target = _owner(spans, token.start, directive.line, line_of)
        if target is None:
            raise MigrationFileError(
                f"{source}:{directive.line}: '-- bluegreen:{directive.name}' is not followed "
                "by a statement; put it on the line before the statement it applies to"
            )
        attached[target].append(directive)

    return [
        Statement(sql[start:end], line_of(start), node, tuple(directives))
        for (start, end, node), directives in zip(spans, attached, strict=True)
    ]


def _owner(
    spans: list[tuple[int, int, Any]],
    offset: int,
    line: int,
    line_of: Any,
) -> int | None:
    """Index of the statement a directive comment at ``offset`` belongs to."""
    for index, (start, end, _node) in enumerate(spans):
        if start <= offset < end:
            return index  # inside the statement
        if offset < start:
            if index > 0 and line_of(spans[index - 1][1]) == line:
                return index - 1  # trailing comment of the previous statement
            return index
    if spans and line_of(spans[-1][1]) == line:
        return len(spans) - 1
    return None
