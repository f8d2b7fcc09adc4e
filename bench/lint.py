"""Lint speed (statements per second) and, optionally, a comparison with squawk.

    python -m bench.lint                       # speed on 1000 statements
    python -m bench.lint --squawk PATH         # + corpus scores of bluegreen and squawk

The 1000 statements are the labelled corpus (tests/lint/corpus), file after
file, repeated until there are 1000: real migration SQL from Rails, Django,
Alembic, Flyway, Prisma and bluegreen files, safe and unsafe. Two timings:
parsing alone (pglast, the floor), and parsing plus every rule. Each is the
median of ``--runs`` runs.

``--squawk`` points at a squawk binary (``npm install squawk-cli`` in a
directory outside the repository gives ``node_modules/.bin/squawk``); every
corpus file is linted by both tools and scored: a file counts as flagged when
the tool reports anything for it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bluegreen.migrations.lint.engine import lint_text
from bluegreen.migrations.sql import parse_statements

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "lint" / "corpus"

# squawk rules about style or settings rather than locking or compatibility.
# "lock_timeout" is bluegreen's runner's job; the others are opinions.
SQUAWK_STYLE_RULES = (
    "prefer-robust-stmts",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
    "ban-char-field",
    "require-lock-timeout",
    "require-statement-timeout",
)


def corpus_files() -> list[Path]:
    """Every labelled corpus file, safe and unsafe."""
    return sorted(CORPUS.glob("*/*.sql"))


def statements_text(count: int) -> str:
    """``count`` statements of real migration SQL as one script (no phase headers)."""
    chunks: list[str] = []
    total = 0
    while total < count:
        for path in corpus_files():
            text = path.read_text(encoding="utf-8")
            for stmt in parse_statements(text):
                if total == count:
                    break
                if stmt.directive("phase") is None and stmt.kind != "TransactionStmt":
                    chunks.append(stmt.text + ";")
                    total += 1
    return "\n".join(chunks) + "\n"


def median_seconds(action: Callable[[], object], runs: int) -> float:
    """The median wall time of ``runs`` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True, slots=True)
class Score:
    """File-level confusion counts of one tool on the corpus."""

    tool: str
    true_positives: int
    false_positives: int
    misses: int
    true_negatives: int

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        unsafe = self.true_positives + self.misses
        return self.true_positives / unsafe if unsafe else 1.0


def score(tool: str, flagged: Callable[[Path], bool]) -> Score:
    """Score ``flagged(path)`` against the corpus labels (the directory name)."""
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for path in corpus_files():
        unsafe = path.parent.name == "unsafe"
        hit = flagged(path)
        key = ("tp" if hit else "fn") if unsafe else ("fp" if hit else "tn")
        counts[key] += 1
    return Score(tool, counts["tp"], counts["fp"], counts["fn"], counts["tn"])


def bluegreen_flags(path: Path) -> bool:
    """Whether bluegreen reports anything for a file."""
    return bool(lint_text(path.read_text(encoding="utf-8"), path=str(path)))


def squawk_flags(binary: str, exclude: Iterable[str] = ()) -> Callable[[Path], bool]:
    """Whether squawk (``--pg-version 15``) reports anything for a file."""
    excluded = ",".join(exclude)

    def flags(path: Path) -> bool:
        args = [binary, "--reporter", "gcc", "--pg-version", "15.0"]
        if excluded:
            args.append(f"--exclude={excluded}")
        done = subprocess.run([*args, str(path)], capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):
            raise SystemExit(f"squawk failed on {path}: {done.stderr.strip()}")
        return any(
            ": warning: " in line or ": error: " in line for line in done.stdout.splitlines()
        )

    return flags


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain left-aligned table."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.lint", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--squawk", metavar="PATH", help="squawk binary to compare with")
    args = parser.parse_args(argv)

    sql = statements_text(args.statements)
    count = len(parse_statements(sql))
    parse_s = median_seconds(lambda: parse_statements(sql), args.runs)
    lint_s = median_seconds(lambda: lint_text(sql, path="bench.sql"), args.runs)
    files = corpus_files()
    texts = [(p, p.read_text(encoding="utf-8")) for p in files]
    files_s = median_seconds(lambda: [lint_text(t, path=str(p)) for p, t in texts], args.runs)
    per_file_statements = sum(len(parse_statements_lenient(t)) for _, t in texts)
    rows = [
        ["parse only (pglast)", f"{count}", f"{parse_s * 1000:.1f}", f"{count / parse_s:,.0f}"],
        ["parse + all rules", f"{count}", f"{lint_s * 1000:.1f}", f"{count / lint_s:,.0f}"],
        [
            f"corpus, {len(files)} files",
            f"{per_file_statements}",
            f"{files_s * 1000:.1f}",
            f"{per_file_statements / files_s:,.0f}",
        ],
    ]
    print(f"lint speed (median of {args.runs} runs)")
    print(table(["what", "statements", "ms", "statements/s"], rows))

    if args.squawk:
        scores = [
            score("bluegreen", bluegreen_flags),
            score("squawk (defaults)", squawk_flags(args.squawk)),
            score("squawk (style rules off)", squawk_flags(args.squawk, SQUAWK_STYLE_RULES)),
        ]
        unsafe = scores[0].true_positives + scores[0].misses
        safe = scores[0].false_positives + scores[0].true_negatives
        print(f"\ncorpus: {unsafe} unsafe + {safe} safe files")
        print(
            table(
                ["tool", "caught", "false alarms", "missed", "precision", "recall"],
                [
                    [
                        s.tool,
                        f"{s.true_positives}/{unsafe}",
                        f"{s.false_positives}/{safe}",
                        str(s.misses),
                        f"{s.precision:.2f}",
                        f"{s.recall:.2f}",
                    ]
                    for s in scores
                ],
            )
        )


def parse_statements_lenient(text: str) -> list[object]:
    """Statements of a corpus file, for counting (migration headers are comments)."""
    return list(parse_statements(text))


if __name__ == "__main__":
    main()
