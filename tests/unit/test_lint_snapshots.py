"""Rendered findings, snapshot-tested: tests/lint/cases/<rule-id>/bad.out.

Regenerate after a deliberate wording change with
``BLUEGREEN_UPDATE_SNAPSHOTS=1 pytest tests/unit/test_lint_snapshots.py`` and
review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bluegreen.migrations.lint.engine import lint_text
from bluegreen.migrations.lint.rules import RULES

CASES = Path(__file__).resolve().parents[2] / "tests" / "lint" / "cases"
UPDATE = os.environ.get("BLUEGREEN_UPDATE_SNAPSHOTS") == "1"


def render(rule_id: str) -> str:
    source = CASES / rule_id / "bad.sql"
    findings = lint_text(source.read_text(encoding="utf-8"), path=f"cases/{rule_id}/bad.sql")
    return "\n\n".join(f.format() for f in findings) + "\n"


@pytest.mark.parametrize("rule_id", [rule.id for rule in RULES])
def test_rendered_output_matches_snapshot(rule_id: str) -> None:
    snapshot = CASES / rule_id / "bad.out"
    rendered = render(rule_id)
    if UPDATE:
        snapshot.write_text(rendered, encoding="utf-8")
    assert snapshot.exists(), f"no snapshot {snapshot}; run with BLUEGREEN_UPDATE_SNAPSHOTS=1"
    assert rendered == snapshot.read_text(encoding="utf-8")
