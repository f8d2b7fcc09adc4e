"""What a lint rule is and what it reports: :class:`Rule` and :class:`Finding`.

Findings are values; the CLI (or ``migrate up``) decides what to do with them.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bluegreen.migrations.lint.locks import NONE, LockInfo
from bluegreen.migrations.lint.nodes import first_line

if TYPE_CHECKING:
    from bluegreen.migrations.sql import Statement

DOCS_URL = "docs/rules"


@dataclass(frozen=True, slots=True)
class Finding:
    """One hazard in one statement.

    ``message`` names the hazard and the object; ``lock``/``blocks``/``rewrites``
    say what the statement does to the table; ``why`` says why that breaks a
    zero-downtime rollout; ``help`` gives the safe alternative with SQL to paste.
    """

    rule_id: str
    path: str
    line: int
    statement: str
    message: str
    lock: str
    blocks: str
    rewrites: bool
    why: str
    help: str

    @property
    def location(self) -> str:
        """``path:line``."""
        return f"{self.path}:{self.line}"

    def headline(self) -> str:
        """The one-line form: ``path:line: rule-id: message``."""
        return f"{self.location}: {self.rule_id}: {self.message}"

    def format(self) -> str:
        """The headline followed by the statement, lock, why and help."""
        lock = self.lock or NONE
        if self.blocks:
            lock += f"; blocks {self.blocks} while held"
        if self.rewrites:
            lock += "; rewrites the table"
        lines = [
            self.headline(),
            f"  statement: {first_line(self.statement)}",
            f"  lock:      {lock}",
        ]
        lines += _field("why", self.why)
        lines += _field("help", self.help)
        lines.append(f"  docs:      {DOCS_URL}/{self.rule_id}.md")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``--output json``)."""
        return asdict(self)


def _field(name: str, text: str) -> list[str]:
    if not text:
        return []
    label = f"  {name + ':':<10} "
    pad = " " * len(label)
    out: list[str] = []
    for index, raw in enumerate(text.strip("\n").split("\n")):
        prefix = label if index == 0 else pad
        wrapped = textwrap.wrap(raw, width=100 - len(pad)) if _is_prose(raw) else [raw]
        for piece in wrapped or [""]:
            out.append((prefix + piece).rstrip())
            prefix = pad
    return out


def _is_prose(line: str) -> bool:
    # SQL in help texts is indented (or a comment) and is never re-wrapped.
    stripped = line.lstrip()
    return line == stripped and not stripped.startswith("--")


@dataclass(frozen=True, slots=True)
class Rule:
    """A lint rule: its id, the lock it is about, and a bad and a safe example."""

    id: str
    summary: str
    lock: str
    bad: str
    safe: str

    def finding(
        self,
        stmt: Statement,
        path: str,
        *,
        message: str,
        why: str,
        help: str,
        lock: LockInfo | None = None,
    ) -> Finding:
        """A :class:`Finding` of this rule for ``stmt``."""
        return Finding(
            rule_id=self.id,
            path=path,
            line=stmt.line,
            statement=stmt.text,
            message=message,
            lock=lock.mode if lock is not None else NONE,
            blocks=lock.blocks if lock is not None else "",
            rewrites=lock.rewrites if lock is not None else False,
            why=why,
            help=help,
        )
