"""require-ignore-reason: a ``-- bluegreen:ignore`` without a reason."""

from __future__ import annotations

from bluegreen.migrations.lint.context import Context, ignores
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

RULE = Rule(
    id="require-ignore-reason",
    summary="A -- bluegreen:ignore directive that does not say why the hazard is acceptable.",
    lock="none",
    bad="-- bluegreen:ignore require-concurrent-index\n"
    "CREATE INDEX events_day_idx ON events (day);",
    safe="-- bluegreen:ignore require-concurrent-index events is written once a day, at night\n"
    "CREATE INDEX events_day_idx ON events (day);",
)


def check(stmt: Statement, ctx: Context) -> list[Finding]:
    """Flag ignore directives with no reason (or no rule id)."""
    findings = []
    for ignore in ignores(stmt):
        if ignore.rules and ignore.reason:
            continue
        named = ", ".join(ignore.rules) if ignore.rules else "nothing"
        findings.append(
            RULE.finding(
                stmt,
                ctx.path,
                message=f"-- bluegreen:ignore at line {ignore.line} silences {named} without "
                "a reason",
                why=(
                    "An ignore without a reason cannot be reviewed: nobody can tell later "
                    "whether the hazard was understood and accepted or just silenced."
                ),
                help=(
                    "Say why it is safe here, after the rule id:\n"
                    f"    -- bluegreen:ignore {ignore.rules[0] if ignore.rules else '<rule-id>'} "
                    "<why this is safe here>"
                ),
                lock=None,
            )
        )
    return findings
