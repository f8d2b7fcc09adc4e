"""Migration sets written by ``bluegreen migrate new`` pass the linter.

``migrate up`` lints before it runs and refuses hazards, so every generated
set must lint clean, linted as the runner does: all files of the directory
in version order (what one step validates, the next relies on). Each file
must also lint clean on its own: ``bluegreen migrate lint FILE`` in a review,
or a directory where the earlier steps were squashed away, sees no earlier
files, and a file that is only safe because of them (a VALIDATE after a
statement that took ACCESS EXCLUSIVE) is one re-apply away from a blocking
scan.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bluegreen.migrations import generators as g
from bluegreen.migrations.files import parse_migration
from bluegreen.migrations.lint import lint_migrations

NOW = datetime(2024, 1, 1, tzinfo=UTC)

REQUESTS = [
    g.RenameColumn(
        "orders", "status", "status_code", "varchar(20)", not_null=True, default="'new'"
    ),
    g.RenameColumn("app.orders", "status", "state", "text"),
    g.ChangeType("orders", "amount", "bigint", "integer", not_null=True, restore_name=True),
    g.ChangeType("orders", "amount", "numeric(12,2)", "integer", using="amount::numeric / 100"),
    g.SetNotNull("users", "phone", default="''"),
    g.SetNotNull("users", "phone"),
    g.AddIndex("users", ("email",), unique=True),
    g.AddIndex("events", ("created_at",), where="kind = 'click'"),
    g.DropColumn("users", "legacy", "text"),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=[type(r).__name__ for r in REQUESTS])
def test_generated_set_lints_clean(request_: g.Request) -> None:
    generated = g.generate(request_, existing=[], now=NOW)
    migrations = [parse_migration(Path("migrations") / f.name, f.text) for f in generated.files]
    assert [f.headline() for f in lint_migrations(migrations)] == []


@pytest.mark.parametrize("request_", REQUESTS, ids=[type(r).__name__ for r in REQUESTS])
def test_each_generated_file_lints_clean_alone(request_: g.Request) -> None:
    generated = g.generate(request_, existing=[], now=NOW)
    for file in generated.files:
        migration = parse_migration(Path("migrations") / file.name, file.text)
        assert [f.headline() for f in lint_migrations([migration])] == [], file.name
