"""``bluegreen migrate`` as a user runs it: subprocesses, exit codes, JSON, a SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.integration.migration_support import (
    eventually,
    fetchval,
    history,
    waiting_on_lock,
    write_migration,
)

pytestmark = pytest.mark.postgres


def _env(dsn: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if dsn is not None:
        env["DATABASE_URL"] = dsn
    return env


def cli(cwd: Path, *args: str, dsn: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``bluegreen migrate ARGS`` in ``cwd`` (so ``migrations/`` is the default dir)."""
    return subprocess.run(
        [sys.executable, "-m", "bluegreen", "migrate", *args],
        cwd=cwd,
        env=_env(dsn),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


def test_no_database_is_a_usage_error(tmp_path: Path) -> None:
    proc = cli(tmp_path, "status")
    assert proc.returncode == 2
    assert "--database-url" in proc.stderr
    assert "DATABASE_URL" in proc.stderr


def test_bad_option_values_are_usage_errors(tmp_path: Path, pg_dsn: str) -> None:
    proc = cli(tmp_path, "up", "--lock-timeout", "soon", dsn=pg_dsn)
    assert proc.returncode == 2
    assert "expected a duration" in proc.stderr


def test_malformed_file_is_a_usage_error_naming_file_and_line(tmp_path: Path, pg_dsn: str) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_x.sql").write_text("-- bluegreen:phase expnd\n-- bluegreen:up\nSELECT 1;\n")
    proc = cli(tmp_path, "up", dsn=pg_dsn)
    assert proc.returncode == 2
    assert "migrations/0001_x.sql:1: unknown phase 'expnd'" in proc.stderr


def test_up_status_verify_plan_and_down_outputs(tmp_path: Path, pg_dsn: str) -> None:
    directory = tmp_path / "migrations"
    write_migration(
        directory,
        "0001_orders.sql",
        "expand",
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text);",
        "DROP TABLE orders;",
    )
    write_migration(
        directory,
        "0002_status_code.sql",
        "expand",
        "ALTER TABLE orders ADD COLUMN status_code text;\n"
        "CREATE INDEX CONCURRENTLY orders_status_code_idx ON orders (status_code);",
        "DROP INDEX CONCURRENTLY orders_status_code_idx;\n"
        "ALTER TABLE orders DROP COLUMN status_code;",
    )

    plan = cli(tmp_path, "plan", dsn=pg_dsn)
    assert plan.returncode == 0, plan.stderr
    assert "plan: apply 2 migration(s)" in plan.stdout
    assert "step 2: outside a transaction (CREATE INDEX CONCURRENTLY" in plan.stdout
    assert "lock: ACCESS EXCLUSIVE, blocks reads and writes" in plan.stdout
    assert "orders: new (does not exist yet)" in plan.stdout
    plan_json = as_json(cli(tmp_path, "plan", "--output", "json", dsn=pg_dsn))
    assert plan_json["direction"] == "up"
    assert [m["label"] for m in plan_json["migrations"]] == ["0001_orders", "0002_status_code"]
    step = plan_json["migrations"][1]["steps"][1]
    assert step["kind"] == "standalone"
    assert step["nonblocking"] is True
    assert step["statements"][0]["lock"]["mode"] == "SHARE UPDATE EXCLUSIVE"

    up = cli(tmp_path, "up", "--to", "1", dsn=pg_dsn)
    assert up.returncode == 0, up.stderr
    assert "applying 0001_orders (expand, 1 step)" in up.stdout
    assert "[1/1] line 3, in a transaction: CREATE TABLE orders" in up.stdout
    assert "applied 1 migration(s); database at version 1" in up.stdout

    up_json = cli(tmp_path, "up", "--output", "json", dsn=pg_dsn)
    assert up_json.returncode == 0, up_json.stderr
    data = as_json(up_json)
    assert set(data) == {
        "ok",
        "direction",
        "migrations",
        "recovered",
        "error",
        "hazards",
        "current_version",
    }
    assert data["ok"] is True
    assert data["current_version"] == 2
    (run,) = data["migrations"]
    assert (run["label"], run["outcome"], run["steps_total"]) == ("0002_status_code", "applied", 2)
    assert "applying 0002_status_code" in up_json.stderr  # progress goes to stderr with json

    status = cli(tmp_path, "status", dsn=pg_dsn)
    assert status.returncode == 0
    assert "version 2" in status.stdout
    assert "status_code  expand  applied" in status.stdout
    status_json = as_json(cli(tmp_path, "status", "--output", "json", dsn=pg_dsn))
    assert set(status_json) == {
        "database",
        "directory",
        "current_version",
        "migrations",
        "backfills",
        "problems",
    }
    assert status_json["backfills"] == []
    assert [m["state"] for m in status_json["migrations"]] == ["applied", "applied"]
    last = status_json["migrations"][0]["last_attempt"]
    assert last["outcome"] == "applied"
    assert last["run_by"]

    verify = cli(tmp_path, "verify", "--output", "json", dsn=pg_dsn)
    assert verify.returncode == 0
    assert as_json(verify) == {"ok": True, "problems": []}

    down = cli(tmp_path, "down", "--output", "json", dsn=pg_dsn)
    assert down.returncode == 0, down.stderr
    down_data = as_json(down)
    assert down_data["direction"] == "down"
    assert [(m["label"], m["outcome"]) for m in down_data["migrations"]] == [
        ("0002_status_code", "rolled_back")
    ]
    assert down_data["current_version"] == 1


def test_hazards_exit_1_unless_allowed(tmp_path: Path, pg_dsn: str) -> None:
    directory = tmp_path / "migrations"
    write_migration(directory, "0001_t.sql", "expand", "CREATE TABLE t (a int);")
    assert cli(tmp_path, "up", dsn=pg_dsn).returncode == 0
    write_migration(directory, "0002_idx.sql", "expand", "CREATE INDEX t_a ON t (a);")
    refused = cli(tmp_path, "up", dsn=pg_dsn)
    assert refused.returncode == 1
    assert "0002_idx.sql:3: require-concurrent-index" in refused.stderr
    assert "--allow-hazard require-concurrent-index" in refused.stderr
    assert "refused: 1 hazard(s); nothing was run" in refused.stdout
    refused_json = cli(tmp_path, "up", "--output", "json", dsn=pg_dsn)
    assert refused_json.returncode == 1
    assert [h["rule_id"] for h in as_json(refused_json)["hazards"]] == ["require-concurrent-index"]
    allowed = cli(tmp_path, "up", "--allow-hazard", "require-concurrent-index", dsn=pg_dsn)
    assert allowed.returncode == 0, allowed.stderr


def test_failures_and_refusals_exit_1(tmp_path: Path, pg_dsn: str) -> None:
    directory = tmp_path / "migrations"
    write_migration(directory, "0001_a.sql", "expand", "CREATE TABLE a (id int);", "DROP TABLE a;")
    write_migration(
        directory,
        "0002_seed.sql",
        "migrate",
        "INSERT INTO a VALUES (1);",
        irreversible="reference data stays",
    )
    write_migration(directory, "0003_broken.sql", "expand", "ALTER TABLE nope ADD COLUMN x int;")
    failed = cli(tmp_path, "up", "--output", "json", dsn=pg_dsn)
    assert failed.returncode == 1
    data = as_json(failed)
    assert data["ok"] is False
    assert data["error"]["type"] == "MigrationStatementError"
    assert "0003_broken.sql:3" in data["error"]["message"]
    assert [(m["label"], m["outcome"]) for m in data["migrations"]] == [
        ("0001_a", "applied"),
        ("0002_seed", "applied"),
        ("0003_broken", "failed"),
    ]
    assert data["migrations"][2]["sqlstate"] == "42P01"

    verify = cli(tmp_path, "verify", dsn=pg_dsn)
    assert verify.returncode == 1
    assert "error: failed: 0003_broken: the last 'up' failed" in verify.stdout

    (directory / "0003_broken.sql").unlink()
    down = cli(tmp_path, "down", "--to", "0", dsn=pg_dsn)
    assert down.returncode == 1
    assert "cannot roll back 0002_seed: it is irreversible (reference data stays)" in down.stderr

    (directory / "0001_a.sql").write_text(
        (directory / "0001_a.sql").read_text().replace("id int", "id bigint")
    )
    changed = cli(tmp_path, "verify", "--output", "json", dsn=pg_dsn)
    assert changed.returncode == 1
    assert [p["kind"] for p in as_json(changed)["problems"]] == ["checksum_mismatch"]
    assert cli(tmp_path, "up", dsn=pg_dsn).returncode == 1


def test_check_exit_codes(tmp_path: Path, pg_dsn: str) -> None:
    directory = tmp_path / "migrations"
    write_migration(directory, "0003_orders.sql", "expand", "CREATE TABLE orders (status text);")
    assert cli(tmp_path, "up", dsn=pg_dsn).returncode == 0
    ok = cli(tmp_path, "check", "--require", "orders.status", "--version", "3", dsn=pg_dsn)
    assert ok.returncode == 0
    assert "healthy" in ok.stdout
    missing = cli(
        tmp_path,
        "check",
        "--require",
        "orders.status_code",
        "--version",
        "4",
        "--output",
        "json",
        dsn=pg_dsn,
    )
    assert missing.returncode == 1
    assert as_json(missing)["missing"] == ["orders.status_code", "version>=4"]
    assert cli(tmp_path, "check", dsn=pg_dsn).returncode == 2
    assert cli(tmp_path, "check", "--require", "a.b.c.d", dsn=pg_dsn).returncode == 2


async def test_killed_runner_leaves_true_history_and_rerun_completes(
    tmp_path: Path, pg_dsn: str
) -> None:
    directory = tmp_path / "migrations"
    write_migration(
        directory,
        "0001_slow.sql",
        "expand",
        "CREATE TABLE items (id int);\n"
        "CREATE INDEX CONCURRENTLY items_id_idx ON items (id);\n"
        "SELECT pg_advisory_xact_lock(4242);  -- the test holds this: a slow statement\n"
        "ALTER TABLE items ADD COLUMN note text;",
        header="-- bluegreen:lock-timeout 60s",
    )
    gate = await asyncpg.connect(pg_dsn)
    try:
        await gate.execute("SELECT pg_advisory_lock(4242)")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bluegreen",
            "migrate",
            "up",
            cwd=tmp_path,
            env=_env(pg_dsn),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        backend = await eventually(lambda: waiting_on_lock(gate, "bluegreen-migrate"), within=60)
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL

        (row,) = await history(pg_dsn)
        assert (row["outcome"], row["steps_done"], row["current_step"]) == ("running", 2, 3)

        async def backend_gone() -> bool:
            pids = await gate.fetch("SELECT pid FROM pg_stat_activity WHERE pid = $1", backend)
            return not pids

        # client_connection_check_interval: the server notices the dead client
        await eventually(backend_gone, within=10)
        await gate.execute("SELECT pg_advisory_unlock(4242)")
    finally:
        await gate.close()

    status = await asyncio.to_thread(cli, tmp_path, "status", "--output", "json", dsn=pg_dsn)
    (m,) = as_json(status)["migrations"]
    assert m["state"] == "interrupted"

    rerun = await asyncio.to_thread(cli, tmp_path, "up", dsn=pg_dsn)
    assert rerun.returncode == 0, rerun.stderr
    assert "0001_slow: a runner" in rerun.stdout
    assert "marked interrupted: steps 1-2 of 3 committed; step 3 was running" in rerun.stdout
    assert "resuming at step 3" in rerun.stdout
    assert "[1] skipped: committed by an earlier attempt" in rerun.stdout
    rows = await history(pg_dsn)
    assert [(r["outcome"], r["steps_done"]) for r in rows] == [("interrupted", 2), ("applied", 3)]
    assert "stopped before finishing" in rows[0]["error"]
    assert (
        await fetchval(
            pg_dsn,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass "
            "AND attname = 'note'",
        )
        == 1
    )


async def test_status_shows_unfinished_backfills_and_plan_a_comment_only_down(
    tmp_path: Path, pg_dsn: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            """
            CREATE TABLE orders (id bigint PRIMARY KEY, status text, status_code text);
            INSERT INTO orders SELECT g, 's' || g, NULL FROM generate_series(1, 2000) g;
            CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.id >= 1200 THEN RAISE EXCEPTION 'guard: row % is off limits', NEW.id; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER guard BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION guard();
            """
        )
        directory = tmp_path / "migrations"
        write_migration(
            directory,
            "0001_copy_status.sql",
            "migrate",
            "-- bluegreen:backfill batch-size=500 pause=0\n"
            "UPDATE orders SET status_code = status WHERE status_code IS NULL;",
            "-- nothing to undo: status_code keeps valid copies",
        )
        up = await asyncio.to_thread(cli, tmp_path, "up", dsn=pg_dsn)
        assert up.returncode == 1
        assert "guard: row 1200 is off limits" in up.stderr

        status = await asyncio.to_thread(cli, tmp_path, "status", dsn=pg_dsn)
        assert status.returncode == 0, status.stderr
        assert "backfill unfinished" in status.stdout
        assert "unfinished backfills (the next run of their section resumes each one):" in (
            status.stdout
        )
        assert (
            "  0001_copy_status (up) step 1, line 4: UPDATE orders SET status_code = status "
            "WHERE status_code IS NULL\n"
            "    1,000 rows updated in 2 batches on orders; last id done: 1000; last batch "
        ) in status.stdout
        data = as_json(
            await asyncio.to_thread(cli, tmp_path, "status", "--output", "json", dsn=pg_dsn)
        )
        (backfill,) = data["backfills"]
        assert (backfill["migration"], backfill["direction"], backfill["last_key"]) == (
            "0001_copy_status",
            "up",
            "1000",
        )

        await conn.execute("DROP TRIGGER guard ON orders")
        up = await asyncio.to_thread(cli, tmp_path, "up", dsn=pg_dsn)
        assert up.returncode == 0, up.stderr
        status = await asyncio.to_thread(cli, tmp_path, "status", dsn=pg_dsn)
        assert "unfinished backfills" not in status.stdout
        assert "copy_status  migrate  applied" in status.stdout

        plan = await asyncio.to_thread(cli, tmp_path, "plan", "--down", dsn=pg_dsn)
        assert plan.returncode == 0, plan.stderr
        assert "0001_copy_status (migrate, reversible)" in plan.stdout
        assert (
            "  note: the down section has only comments: nothing to run "
            "(nothing to undo: status_code keeps valid copies)"
        ) in plan.stdout
        down = await asyncio.to_thread(cli, tmp_path, "down", dsn=pg_dsn)
        assert down.returncode == 0, down.stderr
        assert "rolling back 0001_copy_status (migrate, no statements)" in down.stdout
        assert "rolled back 1 migration(s)" in down.stdout
    finally:
        await conn.close()
