"""The migration safety linter: SQL in, findings out.

``lint_sql`` / ``lint_migration`` / ``lint_migrations`` are pure (see
:mod:`.engine`); ``lint_paths`` reads files (:mod:`.paths`). ``lock_for`` tells
which lock any statement takes (:mod:`.locks`); ``section_locks`` answers the
same with what earlier files established (for ``migrate plan``). Rules live one per module in
:mod:`.rules`, documented in ``docs/rules/``.
"""

from __future__ import annotations

from bluegreen.migrations.lint.context import SchemaFacts
from bluegreen.migrations.lint.engine import (
    lint_migration,
    lint_migrations,
    lint_sql,
    lint_statements,
    lint_text,
    section_locks,
    statement_locks,
)
from bluegreen.migrations.lint.locks import LockInfo, lock_for
from bluegreen.migrations.lint.paths import lint_file, lint_paths
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.lint.rules import RULE_IDS, RULES

__all__ = [
    "RULES",
    "RULE_IDS",
    "Finding",
    "LockInfo",
    "Rule",
    "SchemaFacts",
    "lint_file",
    "lint_migration",
    "lint_migrations",
    "lint_paths",
    "lint_sql",
    "lint_statements",
    "lint_text",
    "lock_for",
    "section_locks",
    "statement_locks",
]
