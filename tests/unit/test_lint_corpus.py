"""The linter on the labelled corpus (tests/lint/corpus): precision, recall, per-file rules.

``safe/`` holds migrations that do not hurt a running application, ``unsafe/``
ones that do (see tests/lint/corpus/README.md). A file counts as flagged when
it has at least one finding. ``expected.json`` records the rules each file
must produce; ``known_misses`` the unsafe files the linter cannot see, each
with the reason, so that fixing one shows up here too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bluegreen.migrations.lint.engine import lint_text

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "lint" / "corpus"
SPEC = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
EXPECTED: dict[str, list[str]] = SPEC["expected"]
KNOWN_MISSES: dict[str, str] = SPEC["known_misses"]
FILES = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/*.sql"))


def found(name: str) -> set[str]:
    path = CORPUS / name
    return {f.rule_id for f in lint_text(path.read_text(encoding="utf-8"), path=name)}


def test_every_corpus_file_is_labelled() -> None:
    assert sorted(EXPECTED) == FILES
    assert len(FILES) >= 80
    assert all(name.split("/")[0] in ("safe", "unsafe") for name in FILES)


@pytest.mark.parametrize("name", FILES)
def test_file_gets_exactly_its_expected_rules(name: str) -> None:
    if name in KNOWN_MISSES:
        assert found(name) == set(), f"known miss now caught: update expected.json ({name})"
        return
    assert found(name) == set(EXPECTED[name])
    assert bool(EXPECTED[name]) == name.startswith("unsafe/")


def test_precision_and_recall() -> None:
    flagged = {name for name in FILES if found(name)}
    unsafe = {name for name in FILES if name.startswith("unsafe/")}
    true_positives = len(flagged & unsafe)
    false_positives = len(flagged - unsafe)
    misses = len(unsafe - flagged)
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / len(unsafe)
    assert false_positives == 0
    assert misses == len(KNOWN_MISSES)
    assert precision == 1.0
    assert recall >= 0.98
