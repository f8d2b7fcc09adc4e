"""Schema checks for health: does the database have what this code version needs?

The seed's ``/health`` endpoint answers "unhealthy" when required columns are
missing. :func:`check_schema` is that check as a function: required tables
(``orders``), columns (``orders.status_code``, or ``schema.table.column``) and
a minimum applied migration version. The rollout controller's smoke tests and
the demo application call it; ``bluegreen migrate check`` is its CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bluegreen.errors import UsageError
from bluegreen.migrations import history


@dataclass(frozen=True, slots=True)
class Requirement:
    """A table, or a column of a table, that must exist."""

    schema: str | None
    table: str
    column: str | None

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """``table``, ``table.column`` or ``schema.table.column``."""
        parts = [p.strip() for p in text.split(".")]
        if not all(parts) or not 1 <= len(parts) <= 3:
            raise UsageError(
                f"cannot read requirement {text!r}: write TABLE, TABLE.COLUMN or "
                "SCHEMA.TABLE.COLUMN"
            )
        if len(parts) == 1:
            return cls(None, parts[0], None)
        if len(parts) == 2:
            return cls(None, parts[0], parts[1])
        return cls(parts[0], parts[1], parts[2])

    @property
    def table_name(self) -> str:
        """The table as written (``schema.table`` or ``table``)."""
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def __str__(self) -> str:
        return f"{self.table_name}.{self.column}" if self.column else self.table_name


@dataclass(frozen=True, slots=True)
class SchemaCheck:
    """The answer: ``ok``, what is ``missing``, and the applied version."""

    ok: bool
    missing: tuple[str, ...]
    current_version: int | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what a /health endpoint can return)."""
        return {
            "ok": self.ok,
            "status": "healthy" if self.ok else "unhealthy",
            "missing": list(self.missing),
            "current_version": self.current_version,
            "details": self.details,
        }


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def _exists(conn: asyncpg.Connection, req: Requirement) -> tuple[bool, str]:
    # Names match as written (case-sensitively), the way information_schema shows them.
    qualified = ".".join(_quote(p) for p in (req.schema, req.table) if p)
    oid = await conn.fetchval("SELECT to_regclass($1)::oid", qualified)
    if oid is None:
        where = "on the search_path" if req.schema is None else f"in schema {req.schema}"
        return False, f"table {req.table_name} not found {where}"
    if req.column is None:
        return True, "present"
    found = await conn.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
        oid,
        req.column,
    )
    if found is None:
        return False, f"column {req.column} not found in table {req.table_name}"
    return True, f"present ({found})"


async def check_schema(
    conn_or_url: asyncpg.Connection | str,
    *,
    require: Sequence[str] = (),
    min_version: int | None = None,
) -> SchemaCheck:
    """Whether the database has every required table/column and migration ``min_version``.

    ``current_version`` is the highest applied migration version (None when
    nothing was applied). Read-only; with a URL it opens and closes its own
    connection.
    """
    requirements = [Requirement.parse(r) for r in require]
    if isinstance(conn_or_url, str):
        from bluegreen.migrations.runner import DEFAULT_APPLICATION_NAME, connect

        conn = await connect(conn_or_url, application_name=f"{DEFAULT_APPLICATION_NAME} (check)")
        try:
            return await _check(conn, requirements, min_version)
        finally:
            await conn.close()
    return await _check(conn_or_url, requirements, min_version)


async def _check(
    conn: asyncpg.Connection, requirements: Sequence[Requirement], min_version: int | None
) -> SchemaCheck:
    missing: list[str] = []
    details: dict[str, Any] = {}
    for req in requirements:
        ok, detail = await _exists(conn, req)
        details[str(req)] = detail
        if not ok:
            missing.append(str(req))
    current = await history.current_version(conn)
    if min_version is not None:
        key = f"version>={min_version}"
        if current is None or current < min_version:
            have = "no migration applied" if current is None else f"version {current} applied"
            details[key] = f"{have}; need at least {min_version}"
            missing.append(key)
        else:
            details[key] = f"version {current} applied"
    return SchemaCheck(not missing, tuple(missing), current, details)
