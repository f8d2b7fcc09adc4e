"""The rule registry: every lint rule, one module each.

A rule module has ``RULE`` (a :class:`~bluegreen.migrations.lint.rule.Rule`: id,
lock, a bad and a safe example) and ``check(stmt, ctx) -> list[Finding]``. The
module name is the rule id in snake_case; its documentation is
``docs/rules/<id>.md``; ``tests/lint/cases/<id>/`` holds a bad and a safe
example. Adding a rule = adding a module here and those three files.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Final

from bluegreen.migrations.lint.context import Context
from bluegreen.migrations.lint.rule import Finding, Rule
from bluegreen.migrations.lint.rules import (
    ban_add_column_with_foreign_key,
    ban_add_serial_column,
    ban_add_stored_generated_column,
    ban_cluster,
    ban_concurrently_in_transaction,
    ban_data_change_outside_migrate,
    ban_drop_column,
    ban_drop_table,
    ban_enum_value_use_before_commit,
    ban_lock_table,
    ban_rename_column,
    ban_rename_enum_value,
    ban_rename_table,
    ban_rewriting_type_change,
    ban_set_logged,
    ban_set_tablespace,
    ban_transaction_control_in_migration,
    ban_truncate,
    ban_unknown_ignore_rule,
    ban_vacuum_full,
    ban_volatile_default,
    require_batched_backfill,
    require_check_for_set_not_null,
    require_concurrent_index,
    require_concurrent_index_drop,
    require_concurrent_refresh,
    require_concurrent_reindex,
    require_concurrent_unique_index,
    require_default_for_not_null_column,
    require_ignore_reason,
    require_not_valid_check,
    require_not_valid_foreign_key,
    require_validate_in_separate_transaction,
)
from bluegreen.migrations.sql import Statement

Check = Callable[[Statement, Context], list[Finding]]

MODULES: Final[tuple[ModuleType, ...]] = (
    ban_add_column_with_foreign_key,
    ban_add_serial_column,
    ban_add_stored_generated_column,
    ban_cluster,
    ban_concurrently_in_transaction,
    ban_data_change_outside_migrate,
    ban_drop_column,
    ban_drop_table,
    ban_enum_value_use_before_commit,
    ban_lock_table,
    ban_rename_column,
    ban_rename_enum_value,
    ban_rename_table,
    ban_rewriting_type_change,
    ban_set_logged,
    ban_set_tablespace,
    ban_transaction_control_in_migration,
    ban_truncate,
    ban_unknown_ignore_rule,
    ban_vacuum_full,
    ban_volatile_default,
    require_batched_backfill,
    require_check_for_set_not_null,
    require_concurrent_index,
    require_concurrent_index_drop,
    require_concurrent_refresh,
    require_concurrent_reindex,
    require_concurrent_unique_index,
    require_default_for_not_null_column,
    require_ignore_reason,
    require_not_valid_check,
    require_not_valid_foreign_key,
    require_validate_in_separate_transaction,
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
