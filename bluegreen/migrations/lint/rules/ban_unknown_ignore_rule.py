"""ban-unknown-ignore-rule: a ``-- bluegreen:ignore`` naming a rule that does not exist."""

from __future__ import annotations

import difflib

from bluegreen.migrations.lint.context import Context, ignores
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="ban-unknown-ignore-rule",
    summary="A -- bluegreen:ignore directive naming a rule id that does not exist.",
    lock="none",
    bad="-- bluegreen:ignore require-concurrent-indexes events is tiny\n"
    "CREATE INDEX events_day_idx ON events (day);",
    safe="-- bluegreen:ignore require-concurrent-index events is tiny\n"
    "CREATE INDEX events_day_idx ON events (day);",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag ignore directives that name unknown rule ids (a typo silences nothing)."""
    findings = []
    for ignore in ignores(stmt):
        for rule_id in ignore.rules:
            if rule_id in ctx.known_rules:
                continue
            close = difflib.get_close_matches(rule_id, sorted(ctx.known_rules), n=1)
            hint = f"Did you mean {close[0]}? " if close else ""
            findings.append(
                RULE.finding(
                    stmt,
                    ctx.path,
                    message=f"-- bluegreen:ignore at line {ignore.line} names unknown rule "
                    f"{rule_id!r}",
                    why=(
                        "A misspelt rule id silences nothing, so the finding it was meant for "
                        "still fails the lint, or worse, the ignore outlives a renamed rule."
                    ),
                    help=f"{hint}`bluegreen migrate lint --rules` lists the rule ids.",
                    lock=None,
                )
            )
    return findings
