"""Preflight against real PostgreSQL, real migration files, real servers and a real state store."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp import web

from bluegreen.controller import machine
from bluegreen.controller.preflight import (
    HISTORY_KIND,
    Attestation,
    PreflightInputs,
    PreflightReport,
    run_preflight,
)
from bluegreen.migrations import runner
from bluegreen.rollout_config import (
    AttestationConfig,
    CommandCheck,
    ItemMode,
    NotificationsConfig,
    PreflightConfig,
    WebhookConfig,
)
from bluegreen.rollout_config_parse import parse_smoke
from bluegreen.routing import Colour
from bluegreen.state.file import FileStateStore
from tests.integration.migration_support import write_migration

pytestmark = pytest.mark.postgres

NOW = 1_714_564_800.0

CREATE_ORDERS = "CREATE TABLE orders (id bigint PRIMARY KEY, status text);"
DROP_ORDERS = "DROP TABLE orders;"
ADD_STATUS_CODE = "ALTER TABLE orders ADD COLUMN status_code varchar(20);"
DROP_STATUS_CODE = "ALTER TABLE orders DROP COLUMN status_code;"


@dataclass
class Site:
    runner: web.AppRunner
    address: str


async def serve(routes: dict[str, tuple[int, str]], *, delay: float = 0.0) -> Site:
    async def handle(request: web.Request) -> web.Response:
        status, text = routes.get(request.path, (404, "not found"))
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, text=text)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    return Site(runner, f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}")


METRICS = "# HELP bluegreen_up 1\n# TYPE bluegreen_up gauge\nbluegreen_up 1\n"
HEALTHY = {"/health": (200, '{"status": "healthy"}'), "/metrics": (200, METRICS)}


@pytest.fixture
async def sites() -> AsyncIterator[dict[str, Site]]:
    made = {
        "blue": await serve(HEALTHY),
        "green": await serve(HEALTHY),
        "no_health": await serve({"/": (200, "home")}),
        "slow_metrics": await serve({"/metrics": (200, METRICS)}, delay=1.0),
    }
    yield made
    for site in made.values():
        await site.runner.cleanup()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStateStore]:
    s = FileStateStore(tmp_path / "state.json", actor="test")
    await s.open()
    yield s
    await s.close()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    write_migration(directory, "0001_create_orders.sql", "expand", CREATE_ORDERS, DROP_ORDERS)
    return directory


def everything(
    sites: dict[str, Site], migrations: Path, pg_dsn: str, **changes: object
) -> PreflightInputs:
    """A setup where every item can pass."""
    base = PreflightInputs(
        version="v2",
        target=Colour.GREEN,
        servers={Colour.BLUE: [sites["blue"].address], Colour.GREEN: [sites["green"].address]},
        preflight=PreflightConfig(
            metrics_url=f"http://{sites['blue'].address}/metrics",
            backup_check=CommandCheck(
                argv=(sys.executable, "-c", "print('last backup 3 h ago')"), timeout=10
            ),
            attestations=(
                AttestationConfig("staging_tested", "Tested in staging", "https://wiki/s"),
            ),
        ),
        smoke=parse_smoke(
            {
                "checks": [{"name": "health", "http": "/health"}],
                "target": [{"name": "schema", "sql": {"require": ["orders.status_code"]}}],
            },
            "smoke",
        ),
        notifications=NotificationsConfig(webhooks=(WebhookConfig("team", "https://x.example/h"),)),
        migrations_dir=migrations,
        database_url=pg_dsn,
        attestations=(Attestation("staging_tested", "alice", NOW, "prod copy, 2 h soak"),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]  # test helper


async def check(inputs: PreflightInputs, store: FileStateStore | None = None) -> PreflightReport:
    return await run_preflight(inputs, store=store, actor="ci", clock=lambda: NOW)


# --------------------------------------------------------------------------- the happy path


async def test_everything_passes_and_is_recorded(
    sites: dict[str, Site], migrations: Path, pg_dsn: str, store: FileStateStore
) -> None:
    await runner.apply(pg_dsn, migrations)
    write_migration(
        migrations, "0002_add_status_code.sql", "expand", ADD_STATUS_CODE, DROP_STATUS_CODE
    )
    write_migration(
        migrations,
        "0003_drop_status.sql",
        "contract",
        "ALTER TABLE orders DROP COLUMN status;",
        "ALTER TABLE orders ADD COLUMN status text;",
    )
    report = await check(everything(sites, migrations, pg_dsn), store)
    failing = {i.name: i.reason for i in report.items if not i.ok}
    assert failing == {}
    assert report.ok
    reasons = {i.name: i.reason for i in report.items}
    assert reasons["migrations_history"] == "1 applied migration(s) unchanged"
    assert reasons["migrations_lint"] == (
        "2 pending clean (0002_add_status_code, 0003_drop_status)"
    )
    assert reasons["migrations_reversible"] == "2 reversible"
    assert reasons["expand_backward_compatible"] == (
        "1 expand/migrate migration(s) keep the old code working; 1 contract migration(s) "
        "run only after promotion"
    )
    assert reasons["health_checks_implemented"] == "2/2 server(s) answer GET /health"
    assert reasons["colours_healthy"] == "blue: 1 healthy; green: 1 healthy (GET /health)"
    assert reasons["monitoring_active"].endswith("/metrics serves 1 metric families")
    assert reasons["backup_recent"] == "exit status 0: last backup 3 h ago"
    assert reasons["staging_tested"] == (
        "attested by alice at 2024-05-01T12:00:00Z (prod copy, 2 h soak)"
    )
    assert reasons["state_store_writable"].startswith(
        "recorded this preflight at version 2 of file:"
    )

    entry = store.current.history[-1]
    assert (entry.kind, entry.actor) == (HISTORY_KIND, "ci")
    assert entry.detail["version"] == "v2"
    assert entry.detail["ok"] is True
    assert entry.detail["attested"] == [
        {
            "name": "staging_tested",
            "by": "alice",
            "at": "2024-05-01T12:00:00Z",
            "note": "prod copy, 2 h soak",
        }
    ]
    assert isinstance(report.event(), machine.PreflightPassed)
    assert json.loads(json.dumps(report.to_json()))["ok"] is True


async def test_no_pending_migrations(sites: dict[str, Site], migrations: Path, pg_dsn: str) -> None:
    await runner.apply(pg_dsn, migrations)
    report = await check(everything(sites, migrations, pg_dsn))
    for name in ("migrations_lint", "migrations_reversible", "expand_backward_compatible"):
        assert report.item(name).ok
        assert report.item(name).reason == "no pending migrations"


# --------------------------------------------------------------------------- migrations


async def test_lint_hazards_fail_unless_accepted(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    await runner.apply(pg_dsn, migrations)
    write_migration(
        migrations,
        "0002_index_status.sql",
        "expand",
        "CREATE INDEX orders_status_idx ON orders (status);",
        "DROP INDEX orders_status_idx;",
    )
    report = await check(everything(sites, migrations, pg_dsn))
    item = report.item("migrations_lint")
    assert item.blocking
    assert item.reason.startswith("1 hazard(s): ")
    assert "0002_index_status.sql:3: require-concurrent-index:" in item.reason
    assert item.reason.endswith("Run `bluegreen migrate lint` for the safe alternative of each")
    assert report.item("expand_backward_compatible").ok  # slow, but the old code keeps working

    accepted = everything(
        sites, migrations, pg_dsn, allow_hazards=frozenset({"require-concurrent-index"})
    )
    item = (await check(accepted)).item("migrations_lint")
    assert item.ok
    assert (
        item.reason
        == "1 pending clean (0002_index_status); accepted hazards: require-concurrent-index"
    )


async def test_destructive_expand_is_not_backward_compatible(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    await runner.apply(pg_dsn, migrations)
    write_migration(
        migrations,
        "0002_drop_status.sql",
        "expand",
        "ALTER TABLE orders DROP COLUMN status;",
        "ALTER TABLE orders ADD COLUMN status text;",
    )
    report = await check(everything(sites, migrations, pg_dsn))
    item = report.item("expand_backward_compatible")
    assert item.blocking
    assert item.reason.startswith("the live version would break: ")
    assert "0002_drop_status.sql:3: ban-drop-column:" in item.reason
    assert item.reason.endswith(
        "Move destructive changes to a contract migration (it runs after promotion)"
    )
    assert not report.ok


async def test_irreversible_migrations_must_say_so(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    write_migration(migrations, "0002_add_status_code.sql", "expand", ADD_STATUS_CODE)
    item = (await check(everything(sites, migrations, pg_dsn))).item("migrations_reversible")
    assert item.blocking
    assert item.reason.startswith(
        "no down section and not marked irreversible: 0002_add_status_code."
    )

    write_migration(
        migrations,
        "0002_add_status_code.sql",
        "expand",
        ADD_STATUS_CODE,
        irreversible="dropping the column would lose written data",
    )
    item = (await check(everything(sites, migrations, pg_dsn))).item("migrations_reversible")
    assert item.ok
    assert item.reason == (
        "1 reversible; irreversible on purpose: 0002_add_status_code (dropping the column "
        "would lose written data)"
    )


async def test_a_changed_applied_migration_fails_history(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    await runner.apply(pg_dsn, migrations)
    write_migration(
        migrations, "0001_create_orders.sql", "expand", CREATE_ORDERS + "\n-- edited", DROP_ORDERS
    )
    item = (await check(everything(sites, migrations, pg_dsn))).item("migrations_history")
    assert item.blocking
    assert "0001_create_orders" in item.reason
    assert "changed" in item.reason


async def test_an_unreachable_database_fails_the_migration_items(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    url = f"postgresql://app:s3cret@{closed_port()}/app"
    report = await check(everything(sites, migrations, pg_dsn, database_url=url))
    for name in ("migrations_history", "migrations_lint", "migrations_reversible"):
        item = report.item(name)
        assert item.blocking
        assert item.reason.startswith("cannot connect to postgresql://app:***@127.0.0.1:")
        assert "s3cret" not in item.reason


# --------------------------------------------------------------------------- colours


async def test_a_down_colour_fails_health(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    down = closed_port()
    servers = {Colour.BLUE: [sites["blue"].address], Colour.GREEN: [down]}
    report = await check(everything(sites, migrations, pg_dsn, servers=servers))
    item = report.item("colours_healthy")
    assert item.blocking
    assert item.reason == f"green {down}: cannot connect to {down}: connection refused"


async def test_a_missing_health_endpoint_is_named(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    servers = {Colour.BLUE: [sites["blue"].address], Colour.GREEN: [sites["no_health"].address]}
    report = await check(everything(sites, migrations, pg_dsn, servers=servers))
    item = report.item("health_checks_implemented")
    assert item.blocking
    assert item.reason.startswith(
        f"green {sites['no_health'].address}: 404 for GET /health: no health endpoint there. "
        "Implement /health"
    )


# --------------------------------------------------------------------------- backup, store


async def test_a_failing_backup_check_blocks(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    script = "import sys; print('newest backup is 26 h old'); sys.exit(2)"
    base = everything(sites, migrations, pg_dsn)
    cfg = replace(base.preflight, backup_check=CommandCheck(argv=(sys.executable, "-c", script)))
    item = (await check(replace(base, preflight=cfg))).item("backup_recent")
    assert item.blocking
    assert item.reason == "exit status 2: newest backup is 26 h old"


async def test_a_hanging_check_is_bounded_by_the_preflight_timeout(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    base = everything(sites, migrations, pg_dsn)
    slow = CommandCheck(argv=(sys.executable, "-c", "import time; time.sleep(30)"), timeout=60)
    cfg = replace(base.preflight, backup_check=slow, timeout=0.5)
    started = time.monotonic()
    item = (await check(replace(base, preflight=cfg))).item("backup_recent")
    assert time.monotonic() - started < 5
    assert item.reason == "did not finish within 0.5 s (preflight.timeout)"


async def test_monitoring_unreachable_is_a_warning(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    base = everything(sites, migrations, pg_dsn)
    cfg = replace(base.preflight, metrics_url=f"http://{sites['no_health'].address}/metrics")
    report = await check(replace(base, preflight=cfg))
    item = report.item("monitoring_active")
    assert (item.ok, item.required) == (False, False)
    assert item.reason.endswith("/metrics answered 404")
    assert report.ok
    required = replace(cfg, items={"monitoring_active": ItemMode.REQUIRED})
    assert not (await check(replace(base, preflight=required))).ok


async def test_an_unwritable_state_store_blocks(
    sites: dict[str, Site], migrations: Path, pg_dsn: str, store: FileStateStore
) -> None:
    await store.close()
    item = (await check(everything(sites, migrations, pg_dsn), store)).item("state_store_writable")
    assert item.blocking
    assert item.reason == f"{store.location}: state store {store.location} is closed"


async def test_preflight_failed_event_reaches_the_machine(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    report = await check(everything(sites, migrations, pg_dsn, attestations=()))
    assert [i.name for i in report.blocking] == ["staging_tested"]
    r, _ = machine.transition(None, machine.Start("v2", salt="s"), NOW)
    r, _ = machine.transition(r, report.event(), NOW)
    assert r.phase is machine.Phase.ROLLED_BACK  # green never had traffic: nothing to undo
    assert r.failure is not None
    assert "staging_tested (not attested; once done, start with --attest staging_tested)" in (
        r.failure.message
    )


async def test_checks_run_concurrently(
    sites: dict[str, Site], migrations: Path, pg_dsn: str
) -> None:
    base = everything(sites, migrations, pg_dsn)
    sleepy = CommandCheck(argv=(sys.executable, "-c", "import time; time.sleep(1)"))
    slow_metrics = f"http://{sites['slow_metrics'].address}/metrics"
    cfg = replace(base.preflight, backup_check=sleepy, metrics_url=slow_metrics)
    report = await check(replace(base, preflight=cfg))
    assert report.item("backup_recent").ok
    assert report.item("monitoring_active").ok
    assert report.seconds < 1.8  # two one-second checks side by side, not one after the other


UNHEALTHY = {"/health": (503, '{"status": "unhealthy"}'), "/metrics": (200, METRICS)}


async def test_a_target_waiting_for_its_pending_schema_passes_health(
    migrations: Path, pg_dsn: str
) -> None:
    # The seed's /health on the new version is 503 until its expand migration ran.
    blue, green = await serve(HEALTHY), await serve(UNHEALTHY)
    try:
        await runner.apply(pg_dsn, migrations)
        write_migration(
            migrations, "0002_add_status_code.sql", "expand", ADD_STATUS_CODE, DROP_STATUS_CODE
        )
        servers = {Colour.BLUE: [blue.address], Colour.GREEN: [green.address]}
        report = await check(
            everything({"blue": blue, "green": green}, migrations, pg_dsn, servers=servers)
        )
        item = report.item("colours_healthy")
        assert item.ok, item.reason
        assert "waits for its 1 pending expand/migrate migration(s)" in item.reason
        assert f"green {green.address}" in item.reason
    finally:
        await blue.runner.cleanup()
        await green.runner.cleanup()


async def test_an_unhealthy_target_without_pending_schema_fails_health(
    migrations: Path, pg_dsn: str
) -> None:
    blue, green = await serve(HEALTHY), await serve(UNHEALTHY)
    try:
        await runner.apply(pg_dsn, migrations)
        servers = {Colour.BLUE: [blue.address], Colour.GREEN: [green.address]}
        report = await check(
            everything({"blue": blue, "green": green}, migrations, pg_dsn, servers=servers)
        )
        item = report.item("colours_healthy")
        assert item.blocking
        assert item.reason.startswith(f"green {green.address}:")
    finally:
        await blue.runner.cleanup()
        await green.runner.cleanup()


async def test_an_unhealthy_live_colour_fails_health_even_with_pending_schema(
    migrations: Path, pg_dsn: str
) -> None:
    blue, green = await serve(UNHEALTHY), await serve(UNHEALTHY)
    try:
        await runner.apply(pg_dsn, migrations)
        write_migration(
            migrations, "0002_add_status_code.sql", "expand", ADD_STATUS_CODE, DROP_STATUS_CODE
        )
        servers = {Colour.BLUE: [blue.address], Colour.GREEN: [green.address]}
        report = await check(
            everything({"blue": blue, "green": green}, migrations, pg_dsn, servers=servers)
        )
        item = report.item("colours_healthy")
        assert item.blocking
        assert f"blue {blue.address}" in item.reason
    finally:
        await blue.runner.cleanup()
        await green.runner.cleanup()
