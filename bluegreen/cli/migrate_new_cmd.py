"""``bluegreen migrate new``: write a multi-phase migration set, or an empty file.

::

    bluegreen migrate new rename-column TABLE OLD NEW [--type TYPE]
    bluegreen migrate new change-type TABLE COLUMN TYPE [--from-type TYPE] [--using EXPR]
                                      [--reverse-using EXPR] [--new-column NAME] [--restore-name]
    bluegreen migrate new set-not-null TABLE COLUMN [--default VALUE]
    bluegreen migrate new add-index TABLE COLUMN... [--unique] [--name NAME] [--using METHOD]
                                    [--where PREDICATE]
    bluegreen migrate new drop-column TABLE COLUMN [--type TYPE]
    bluegreen migrate new NAME --phase expand|migrate|contract

Common options: ``--dir`` (default ``migrations/``), ``--database-url`` (default
``$DATABASE_URL``), ``--offline``, ``--dry-run``, ``--output text|json``.

The texts come from :mod:`bluegreen.migrations.generators` (pure). This module
only looks facts up in the database (column type, NOT NULL, default, dependent
objects — when a database is given and ``--offline`` is not) and writes the
files, refusing to overwrite anything. Versions continue the directory's
numbering (``0007`` -> ``0008``, same width) or, in an empty directory or one
using timestamps, are UTC timestamps one second apart (dbmate's scheme).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bluegreen.cli.output import add_output_option, emit
from bluegreen.errors import MigrationConnectError, UsageError
from bluegreen.migrations import generators as gen
from bluegreen.migrations.files import Phase

EXIT_OK = 0
KINDS: dict[str, str] = {
    "rename-column": "rename a column: add + sync trigger, backfill, drop the old one",
    "change-type": "change a column's type through a new column with casts",
    "set-not-null": "CHECK NOT VALID, backfill, VALIDATE, SET NOT NULL",
    "add-index": "CREATE INDEX CONCURRENTLY in its own migration",
    "drop-column": "drop a column in the contract phase, after a grace period",
}


def register(migrate_subparsers: Any) -> None:
    """Add ``new`` to the ``migrate`` command group."""
    kinds = "\n".join(f"  {name:<14} {text}" for name, text in KINDS.items())
    parser = migrate_subparsers.add_parser(
        "new",
        help="write a zero-downtime migration set (rename-column, set-not-null, ...) or an "
        "empty migration",
        description=(
            "Write the migration files of a zero-downtime schema change, one per phase, "
            "with the SQL, the down sections and comments saying what the application must "
            "do between them. `bluegreen migrate new KIND --help` shows a kind's options."
        ),
        epilog=f"kinds:\n{kinds}\n  NAME           an empty migration: NAME --phase PHASE",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", metavar="KIND|NAME", help="what to generate (see below)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


# --------------------------------------------------------------------------- per-kind parsers


def _common(parser: argparse.ArgumentParser, *, database: bool) -> None:
    parser.add_argument("--dir", type=Path, help="the migrations directory (default: migrations/)")
    if database:
        parser.add_argument(
            "--database-url",
            metavar="URL",
            help="look the column up in this database (default: $DATABASE_URL)",
        )
        parser.add_argument(
            "--offline", action="store_true", help="do not look anything up in a database"
        )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the files instead of writing them"
    )
    add_output_option(parser)


def _batch_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size",
        type=int,
        default=gen.DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows per backfill batch (default {gen.DEFAULT_BATCH_SIZE})",
    )


def _kind_parser(kind: str) -> argparse.ArgumentParser:
    prog = f"bluegreen migrate new {kind}"
    p = argparse.ArgumentParser(prog=prog, description=KINDS.get(kind))
    match kind:
        case "rename-column":
            p.add_argument("table")
            p.add_argument("old", metavar="OLD")
            p.add_argument("new", metavar="NEW")
            p.add_argument("--type", help="the column's type (looked up when a database is given)")
            p.add_argument("--not-null", action="store_true", help="the column is NOT NULL")
            p.add_argument("--default", metavar="EXPR", help="the column's default (SQL)")
            _batch_size(p)
            _common(p, database=True)
        case "change-type":
            p.add_argument("table")
            p.add_argument("column")
            p.add_argument("type", help="the new type")
            p.add_argument("--from-type", help="the current type (looked up when possible)")
            p.add_argument(
                "--new-column", metavar="NAME", help="the new column (default COLUMN_TYPE)"
            )
            p.add_argument(
                "--using",
                metavar="EXPR",
                help="old value -> new, over the row's columns (default CAST(COLUMN AS TYPE))",
            )
            p.add_argument(
                "--reverse-using",
                metavar="EXPR",
                help="new value -> old, for code still on the old column "
                "(default CAST(NEW_COLUMN AS FROM_TYPE))",
            )
            p.add_argument(
                "--restore-name",
                action="store_true",
                help="append a second round that renames the new column back to COLUMN",
            )
            p.add_argument("--not-null", action="store_true", help="the column is NOT NULL")
            p.add_argument("--default", metavar="EXPR", help="the column's default (SQL)")
            _batch_size(p)
            _common(p, database=True)
        case "set-not-null":
            p.add_argument("table")
            p.add_argument("column")
            p.add_argument(
                "--default",
                metavar="VALUE",
                help="SQL value: set as the column default and written into existing NULLs "
                "(quote text: \"'pending'\")",
            )
            _batch_size(p)
            _common(p, database=False)
        case "add-index":
            p.add_argument("table")
            p.add_argument("columns", nargs="+", metavar="COLUMN", help="columns or expressions")
            p.add_argument("--unique", action="store_true")
            p.add_argument("--name", help="index name (default TABLE_COLUMNS_idx / _key)")
            p.add_argument("--using", dest="method", metavar="METHOD", help="btree, gin, ...")
            p.add_argument("--where", metavar="PREDICATE", help="a partial index's predicate")
            _common(p, database=False)
        case "drop-column":
            p.add_argument("table")
            p.add_argument("column")
            p.add_argument(
                "--type", help="recreate the column (empty, nullable) in the down section"
            )
            _common(p, database=False)
        case _:
            p = argparse.ArgumentParser(
                prog="bluegreen migrate new NAME",
                description="an empty migration file for one phase",
            )
            p.add_argument("name")
            p.add_argument("--phase", required=True, choices=[ph.value for ph in Phase])
            _common(p, database=False)
    return p


# --------------------------------------------------------------------------- database facts


@dataclass(frozen=True, slots=True)
class ColumnFacts:
    """What the database says about a column."""

    type: str
    not_null: bool
    default: str | None
    identity: bool
    generated: bool
    in_primary_key: bool
    dependents: tuple[str, ...]


_COLUMN_SQL = """
SELECT format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       a.attidentity::text <> '' AS identity, a.attgenerated::text <> '' AS generated,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary
               AND a.attnum = ANY (i.indkey)) AS in_pk,
       ARRAY(SELECT pg_describe_object(dep.classid, dep.objid, dep.objsubid)
             FROM pg_depend dep
             WHERE dep.refclassid = 'pg_class'::regclass AND dep.refobjid = a.attrelid
               AND dep.refobjsubid = a.attnum AND dep.deptype IN ('n', 'a')
               AND dep.classid <> 'pg_attrdef'::regclass
             ORDER BY 1) AS dependents
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped
"""


async def lookup_column(url: str, table: str, column: str) -> ColumnFacts | None:
    """The facts about ``table.column`` (None if the table has no such column)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise MigrationConnectError(
            f"cannot connect to the database to look up {table}.{column}: {exc}. "
            "Check --database-url / DATABASE_URL, or pass --offline with the column's facts"
        ) from None
    try:
        row = await conn.fetchrow(_COLUMN_SQL, table, column)
    finally:
        await conn.close()
    if row is None:
        return None
    return ColumnFacts(
        type=row["type"],
        not_null=row["attnotnull"],
        default=row["default_expr"],
        identity=row["identity"],
        generated=row["generated"],
        in_primary_key=row["in_pk"],
        dependents=tuple(row["dependents"]),
    )


def _database_url(args: argparse.Namespace, outer: argparse.Namespace) -> str | None:
    if getattr(args, "offline", False):
        return None
    url: str | None = (
        getattr(args, "database_url", None)
        or getattr(outer, "database_url", None)
        or os.environ.get("DATABASE_URL")
    )
    return url


def _facts(args: argparse.Namespace, outer: argparse.Namespace, column: str) -> ColumnFacts | None:
    url = _database_url(args, outer)
    if url is None:
        return None
    table = gen.quote_qualified(gen.parse_table(args.table))
    name = gen.parse_column(column)
    facts = asyncio.run(lookup_column(url, table, name))
    if facts is None:
        raise UsageError(
            f"{table} has no column {name!r} in the database; check the names (or pass "
            "--offline to generate without looking)"
        )
    refuse = None
    if facts.in_primary_key:
        refuse = "is part of the primary key"
    elif facts.identity:
        refuse = "is an identity column"
    elif facts.generated:
        refuse = "is a generated column"
    elif facts.default is not None and "nextval(" in facts.default:
        refuse = "takes its default from a sequence it owns (serial)"
    if refuse:
        raise UsageError(
            f"{table}.{name} {refuse}: moving it to a new column also means moving that "
            "(constraint, sequence or expression), which this generator does not do. Plan "
            "it by hand; `bluegreen migrate lint` checks each step"
        )
    return facts


def _dependents(facts: ColumnFacts | None, column: str) -> tuple[str, ...]:
    if facts is None:
        return ()
    return tuple(
        f"{what} uses {column}: recreate it for the new column before the contract phase "
        "(for an index: bluegreen migrate new add-index)"
        for what in facts.dependents
        if "bluegreen_sync_" not in what
    )


# --------------------------------------------------------------------------- requests


def build_request(kind: str, args: argparse.Namespace, outer: argparse.Namespace) -> gen.Request:
    """The generator request for parsed ``args`` (may look facts up in the database)."""
    match kind:
        case "rename-column":
            facts = _facts(args, outer, args.old)
            if args.type is None and facts is None:
                raise UsageError(
                    "rename-column needs the column's type: pass --type 'varchar(20)', or "
                    "--database-url / DATABASE_URL to look it up"
                )
            return gen.RenameColumn(
                table=args.table,
                old=args.old,
                new=args.new,
                type=args.type or (facts.type if facts else ""),
                not_null=args.not_null or bool(facts and facts.not_null),
                default=args.default or (facts.default if facts else None),
                batch_size=args.batch_size,
                warnings=_dependents(facts, gen.parse_column(args.old)),
            )
        case "change-type":
            facts = _facts(args, outer, args.column)
            if args.from_type is None and facts is None:
                raise UsageError(
                    "change-type needs the current type: pass --from-type integer, or "
                    "--database-url / DATABASE_URL to look it up"
                )
            return gen.ChangeType(
                table=args.table,
                column=args.column,
                new_type=args.type,
                old_type=args.from_type or (facts.type if facts else ""),
                new_column=args.new_column,
                using=args.using,
                reverse_using=args.reverse_using,
                not_null=args.not_null or bool(facts and facts.not_null),
                default=args.default or (facts.default if facts else None),
                restore_name=args.restore_name,
                batch_size=args.batch_size,
                warnings=_dependents(facts, gen.parse_column(args.column)),
            )
        case "set-not-null":
            return gen.SetNotNull(args.table, args.column, args.default, args.batch_size)
        case "add-index":
            return gen.AddIndex(
                table=args.table,
                columns=tuple(args.columns),
                unique=args.unique,
                name=args.name,
                method=args.method,
                where=args.where,
            )
        case "drop-column":
            return gen.DropColumn(args.table, args.column, args.type)
        case _:
            return gen.Template(args.name, Phase(args.phase))


# --------------------------------------------------------------------------- writing


def existing_files(directory: Path) -> list[str]:
    """Names of the migration files already in ``directory`` (none if it does not exist)."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.glob("*.sql") if p.is_file())


def write_set(directory: Path, generated: gen.GeneratedSet) -> list[Path]:
    """Write every file, or none: refuses to overwrite a file or reuse a version."""
    directory.mkdir(parents=True, exist_ok=True)
    taken = {name.split("_", 1)[0]: name for name in existing_files(directory)}
    for file in generated.files:
        version = file.name.split("_", 1)[0]
        if (directory / file.name).exists():
            raise UsageError(f"{directory / file.name} already exists; not overwriting it")
        if version in taken:
            raise UsageError(
                f"{directory / taken[version]} already uses version {version}; not writing "
                f"{file.name}"
            )
    written: list[Path] = []
    try:
        for file in generated.files:
            path = directory / file.name
            with path.open("x", encoding="utf-8") as handle:
                handle.write(file.text)
            written.append(path)
    except OSError as exc:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise UsageError(f"cannot write {directory}: {exc}") from None
    return written


def _render(data: dict[str, Any]) -> str:
    lines = []
    for file in data["files"]:
        note = "" if file["reversible"] else "  (irreversible)"
        lines.append(f"{data['verb']} {file['path']}  [{file['phase']}]{note}")
    if data["steps"]:
        lines.append("")
        lines.append("Rollout:")
        lines.extend(f"  {i}. {step}" for i, step in enumerate(data["steps"], 1))
    return "\n".join(lines)


def run(outer: argparse.Namespace) -> int:
    """Handle ``bluegreen migrate new``."""
    kind: str = outer.kind
    rest: Sequence[str] = outer.rest
    if kind.startswith("-"):
        raise UsageError(f"migrate new: expected a kind or a NAME first, got {kind!r}")
    parser = _kind_parser(kind)
    args = parser.parse_args(rest if kind in KINDS else [kind, *rest])
    directory: Path = args.dir or getattr(outer, "dir", None) or Path("migrations")
    request = build_request(kind, args, outer)
    generated = gen.generate(request, existing=existing_files(directory), now=datetime.now(UTC))
    if args.dry_run:
        if args.output == "json":
            emit(
                {
                    "files": [
                        {"name": f.name, "phase": f.phase.value, "text": f.text}
                        for f in generated.files
                    ],
                    "steps": list(generated.steps),
                },
                "json",
                str,
            )
        else:
            for file in generated.files:
                sys.stdout.write(f"==> {directory / file.name} <==\n{file.text}\n")
        return EXIT_OK
    paths = write_set(directory, generated)
    data = {
        "verb": "created",
        "files": [
            {"path": str(path), "phase": f.phase.value, "reversible": f.reversible}
            for path, f in zip(paths, generated.files, strict=True)
        ],
        "steps": list(generated.steps),
    }
    emit(data, args.output, _render)
    if kind not in KINDS:
        print(f"edit {paths[0]}: its up section is empty", file=sys.stderr)
    return EXIT_OK
