"""The rule registry: every lint rule, one module each.

A rule module has ``RULE`` (a :class:`~bluegreen.migrations.lint.rule.Rule`: id,
lock, a bad and a safe example) and ``check(stmt, ctx) -> list[Finding]``. The
module name is the rule id in snake_case; its documentation is
``docs/rules/<id>.md``; ``tests/lint/cases/<id>/`` holds a bad and a safe
example. Adding a rule = adding a module here and those three files: every
module of this package is a rule, loaded in name order (the order findings of
one statement are reported in).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Final

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.sql import Statement

Check = Callable[[Statement, Context], list[Finding]]

MODULES: Final[tuple[ModuleType, ...]] = tuple(
    importlib.import_module(f"{__name__}.{info.name}")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name)
)

RULES: Final[tuple[Rule, ...]] = tuple(module.RULE for module in MODULES)
CHECKS: Final[tuple[tuple[Rule, Check], ...]] = tuple(
    (module.RULE, module.check) for module in MODULES
)
RULE_IDS: Final = frozenset(rule.id for rule in RULES)


def get(rule_id: str) -> Rule:
    """The rule with this id; KeyError if there is none."""
    for rule in RULES:
        if rule.id == rule_id:
            return rule
    raise KeyError(rule_id)
