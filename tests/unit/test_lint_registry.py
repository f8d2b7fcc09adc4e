"""The rule registry: ids, modules, docs and example cases stay in step."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

from bluegreen.migrations.lint.engine import lint_text
from bluegreen.migrations.lint.rules import MODULES, RULE_IDS, RULES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "rules"
CASES = ROOT / "tests" / "lint" / "cases"
KEBAB_VERB = re.compile(r"^(require|ban|prefer)-[a-z0-9]+(-[a-z0-9]+)*$")
IDS = [rule.id for rule in RULES]


def test_ids_are_unique() -> None:
    assert len(IDS) == len(set(IDS)) == len(RULE_IDS)


@pytest.mark.parametrize("rule_id", IDS)
def test_id_is_a_kebab_case_verb(rule_id: str) -> None:
    assert KEBAB_VERB.match(rule_id)


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_module_name_is_the_id_in_snake_case(module: ModuleType) -> None:
    rule = module.RULE
    assert module.__name__.rsplit(".", 1)[-1] == rule.id.replace("-", "_")
    assert callable(module.check)
    assert (module.__doc__ or "").startswith(f"{rule.id}: ")
    assert all((rule.summary, rule.lock, rule.bad, rule.safe))


def test_every_rule_module_in_the_package_is_registered() -> None:
    package = ROOT / "bluegreen" / "migrations" / "lint" / "rules"
    files = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    assert files == {rule_id.replace("-", "_") for rule_id in IDS}


@pytest.mark.parametrize("rule_id", IDS)
def test_rule_has_docs_with_the_four_sections(rule_id: str) -> None:
    text = (DOCS / f"{rule_id}.md").read_text(encoding="utf-8")
    assert text.startswith(f"# {rule_id}\n")
    for section in ("## problem", "## solution", "Instead of:", "Use:"):
        assert section in text, f"{rule_id}.md lacks {section!r}"
    assert f"-- bluegreen:ignore {rule_id} " in text


def test_docs_index_lists_every_rule() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for rule_id in IDS:
        assert f"[{rule_id}]({rule_id}.md)" in index
    assert {p.stem for p in DOCS.glob("*.md")} - {"README"} == set(IDS)


@pytest.mark.parametrize("rule_id", IDS)
def test_bad_case_produces_the_rule(rule_id: str) -> None:
    path = CASES / rule_id / "bad.sql"
    found = {f.rule_id for f in lint_text(path.read_text(encoding="utf-8"), path=str(path))}
    assert rule_id in found


@pytest.mark.parametrize("rule_id", IDS)
def test_safe_case_produces_nothing(rule_id: str) -> None:
    path = CASES / rule_id / "safe.sql"
    findings = lint_text(path.read_text(encoding="utf-8"), path=str(path))
    assert [f.headline() for f in findings] == []


def test_every_case_directory_belongs_to_a_rule() -> None:
    assert {p.name for p in CASES.iterdir() if p.is_dir()} == set(IDS)
