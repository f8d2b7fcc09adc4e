"""Backfill benchmark: a batched backfill next to the one-statement UPDATE, under app writes.

    .venv/bin/python -m bench.backfill                 # 1 M rows, about a minute
    .venv/bin/python -m bench.backfill --rows 100000   # quicker
    .venv/bin/python -m bench.backfill --output json

In a database of its own (created on the server ``--dsn`` points at, dropped
at the end, also on errors and Ctrl-C) it builds ``orders`` with ``--rows``
rows and copies ``status`` into ``status_code`` — the seed's
``UPDATE orders SET status_code = status WHERE status_code IS NULL`` — twice:

* **batched**: :func:`bluegreen.migrations.backfill.run_backfill` (primary-key
  ranges of ``--batch-size`` rows, one short transaction each, ``--pause``
  between batches);
* **one UPDATE**: the statement as written, one transaction.

Each time (and once with no backfill, as a baseline) an "application" of
``--writers`` connections does single-row writes on the same table on a fixed
schedule: UPDATE of a random existing order, or INSERT of a new one. Latency
is measured from the moment a write was *scheduled*, so a write stuck behind
a row lock also delays the ones queued after it (no coordinated omission);
every write scheduled before a case ends is run and counted.
The one-statement UPDATE holds a lock on every row it changed until it
commits: the writes that touch those rows wait, and the p99 shows it.

The table is rebuilt before each case so both start from the same state. The
whole run has a time budget (``--budget``); the one-statement UPDATE runs under
a statement_timeout inside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from bench.stats import summarise
from bluegreen.migrations.backfill import BackfillSpec, run_backfill
from bluegreen.migrations.sql import parse_statements

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SEED_UPDATE = "UPDATE orders SET status_code = status WHERE status_code IS NULL"


@dataclass
class Case:
    """One measured case: the backfill's numbers and the application's write latencies."""

    name: str
    rows: int | None
    seconds: float
    rows_per_second: float | None
    writes: int
    write_errors: int
    latency_ms: dict[str, float] = field(default_factory=dict)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def build_table(conn: asyncpg.Connection, rows: int) -> None:
    await conn.execute(
        "DROP TABLE IF EXISTS orders; DROP TABLE IF EXISTS bluegreen_backfill_progress"
    )
    await conn.execute(
        """
        CREATE TABLE orders (
            id bigint PRIMARY KEY,
            customer_id int NOT NULL,
            status varchar(20) NOT NULL,
            status_code varchar(20),
            amount int NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    await conn.execute(
        f"""
        INSERT INTO orders (id, customer_id, status, amount)
        SELECT g, g % 9973, (ARRAY['new','paid','shipped','done','cancelled'])[1 + g % 5], g % 1000
        FROM generate_series(1, {int(rows)}) g
        """  # noqa: S608 - an integer
    )
    await conn.execute("VACUUM ANALYZE orders")


class App:
    """``writers`` connections writing single rows on a fixed schedule."""

    def __init__(self, dsn: str, rows: int, writers: int, interval: float) -> None:
        self.dsn, self.rows, self.writers, self.interval = dsn, rows, writers, interval
        self.latencies: list[float] = []
        self.errors = 0
        self._stop_at = float("inf")
        self._next_id = 0

    async def __aenter__(self) -> App:
        self._conns = [await asyncpg.connect(self.dsn) for _ in range(self.writers)]
        self._next_id = await self._conns[0].fetchval("SELECT max(id) FROM orders")
        self._tasks = [
            asyncio.create_task(self._loop(conn, seed)) for seed, conn in enumerate(self._conns)
        ]
        return self

    async def _loop(self, conn: asyncpg.Connection, seed: int) -> None:
        rng = random.Random(seed)
        scheduled = time.monotonic() + rng.random() * self.interval
        # Every write scheduled before the stop runs, even the ones queued behind a lock.
        while scheduled < self._stop_at:
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                if rng.random() < 0.8:
                    await conn.execute(
                        "UPDATE orders SET amount = amount + 1, updated_at = now() WHERE id = $1",
                        rng.randint(1, self.rows),
                    )
                else:
                    self._next_id += 1
                    await conn.execute(
                        "INSERT INTO orders (id, customer_id, status, status_code, amount) "
                        "VALUES ($1, 1, 'new', 'new', 0)",
                        self._next_id,
                    )
            except asyncpg.PostgresError:
                self.errors += 1
            # from the scheduled time: a write stuck behind a lock delays the queue too
            self.latencies.append(time.monotonic() - scheduled)
            scheduled += self.interval

    async def __aexit__(self, *exc: object) -> None:
        self._stop_at = time.monotonic()
        await asyncio.gather(*self._tasks)
        for conn in self._conns:
            await conn.close()

    def summary(self) -> dict[str, float]:
        return {k: round(v * 1000, 2) for k, v in summarise(self.latencies).items()}


async def baseline(dsn: str, args: argparse.Namespace) -> Case:
    async with App(dsn, args.rows, args.writers, args.write_interval) as app:
        started = time.monotonic()
        await asyncio.sleep(args.baseline_seconds)
        seconds = time.monotonic() - started
    return Case(
        "no backfill (baseline)", None, seconds, None, len(app.latencies), app.errors, app.summary()
    )


async def batched(dsn: str, args: argparse.Namespace) -> Case:
    directive = f"-- bluegreen:backfill batch-size={args.batch_size} pause={args.pause}\n"
    (stmt,) = parse_statements(directive + SEED_UPDATE)
    spec = BackfillSpec.from_statement(stmt, "bench_backfill", 0)
    conn = await asyncpg.connect(dsn)
    try:
        async with App(dsn, args.rows, args.writers, args.write_interval) as app:
            result = await run_backfill(conn, spec, progress=lambda p: None)
        left = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE status_code IS NULL AND id <= $1", args.rows
        )
    finally:
        await conn.close()
    if left:
        raise RuntimeError(f"batched backfill left {left} rows")
    return Case(
        f"batched backfill ({args.batch_size} rows, pause {args.pause})",
        result.rows,
        result.seconds,
        result.rows / result.seconds,
        len(app.latencies),
        app.errors,
        app.summary(),
    )


async def one_statement(dsn: str, args: argparse.Namespace) -> Case:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"SET statement_timeout = '{int(args.statement_timeout)}s'")
        async with App(dsn, args.rows, args.writers, args.write_interval) as app:
            started = time.monotonic()
            status = await conn.execute(SEED_UPDATE)
            seconds = time.monotonic() - started
    finally:
        await conn.close()
    rows = int(status.rsplit(" ", 1)[-1])
    return Case(
        "one UPDATE statement",
        rows,
        seconds,
        rows / seconds,
        len(app.latencies),
        app.errors,
        app.summary(),
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    admin = await asyncpg.connect(args.dsn)
    name = f"bg_bench_backfill_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(args.dsn, name)
    cases: list[Case] = []
    try:
        conn = await asyncpg.connect(dsn)
        try:
            version = await conn.fetchval("SHOW server_version")
            print(f"building {args.rows:,} rows ...", file=sys.stderr)
            await build_table(conn, args.rows)
            print("baseline ...", file=sys.stderr)
            cases.append(await baseline(dsn, args))
            print("batched backfill ...", file=sys.stderr)
            cases.append(await batched(dsn, args))
            print("rebuilding, then one UPDATE ...", file=sys.stderr)
            await build_table(conn, args.rows)
            cases.append(await one_statement(dsn, args))
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return {
        "server_version": version,
        "rows": args.rows,
        "batch_size": args.batch_size,
        "pause": args.pause,
        "writers": args.writers,
        "write_interval_ms": args.write_interval * 1000,
        "cpus": os.cpu_count(),
        "cases": [asdict(c) for c in cases],
    }


def render(report: dict[str, Any]) -> str:
    cases = report["cases"]
    head = ("case", "rows", "seconds", "rows/s", "writes", "errors", "p50 ms", "p99 ms", "max ms")
    lines = []
    for c in cases:
        lat = c["latency_ms"]
        lines.append(
            (
                c["name"],
                f"{c['rows']:,}" if c["rows"] is not None else "-",
                f"{c['seconds']:.1f}",
                f"{c['rows_per_second']:,.0f}" if c["rows_per_second"] else "-",
                str(c["writes"]),
                str(c["write_errors"]),
                f"{lat['p50']:.1f}",
                f"{lat['p99']:.1f}",
                f"{lat['max']:.1f}",
            )
        )
    batched, single = cases[1], cases[2]
    lines.append(
        (
            "ratio batched / one UPDATE",
            "",
            f"{batched['seconds'] / single['seconds']:.2f}x",
            f"{batched['rows_per_second'] / single['rows_per_second']:.2f}x",
            "",
            "",
            f"{batched['latency_ms']['p50'] / single['latency_ms']['p50']:.3f}x",
            f"{batched['latency_ms']['p99'] / single['latency_ms']['p99']:.3f}x",
            f"{batched['latency_ms']['max'] / single['latency_ms']['max']:.3f}x",
        )
    )
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
    out = [
        f"PostgreSQL {report['server_version']}, {report['rows']:,} rows, app: "
        f"{report['writers']} writers x 1 write / {report['write_interval_ms']:.0f} ms "
        "(80% UPDATE of a random row, 20% INSERT); latency from the scheduled time",
        "",
    ]
    for row in [head, *lines]:
        out.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default=os.environ.get("BLUEGREEN_TEST_DSN", DEFAULT_DSN))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--pause", default="10ms", help="pause between batches (default 10ms)")
    p.add_argument("--writers", type=int, default=4)
    p.add_argument(
        "--write-interval", type=float, default=0.01, help="seconds between a writer's writes"
    )
    p.add_argument("--baseline-seconds", type=float, default=5.0)
    p.add_argument("--statement-timeout", type=float, default=300.0)
    p.add_argument("--budget", type=float, default=900.0, help="seconds for the whole run")
    p.add_argument("--output", choices=("table", "json"), default="table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the backfill's own log lines go to stderr with the progress notes; stdout is the report
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        report = asyncio.run(asyncio.wait_for(run(args), args.budget))
    except TimeoutError:
        print(
            f"bench.backfill: over the {args.budget:.0f}s budget; nothing to report",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
