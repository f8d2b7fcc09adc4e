"""Smoke checks against real aiohttp servers, real PostgreSQL and real processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from bluegreen.controller import machine
from bluegreen.controller.conditions import Reason
from bluegreen.controller.smoke import (
    SmokeReport,
    SmokeTarget,
    run_command,
    run_smoke,
    run_smoke_action,
)
from bluegreen.rollout_config import CheckKind, CommandCheck, SmokeCheck, SmokeRole
from bluegreen.rollout_config_parse import parse_smoke
from bluegreen.routing import Colour
from tests.integration.migration_support import eventually

# --------------------------------------------------------------------------- a small app


@dataclass
class App:
    """A real app server: /health, /orders, /slow, /hang, /redirect, /big."""

    version: str
    runner: web.AppRunner | None = None
    port: int = 0
    health_status: int = 200
    release: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _app(app: App) -> web.Application:
    async def record(request: web.Request) -> bytes:
        body = await request.read()
        app.requests.append((request.method, request.path_qs, dict(request.headers), body))
        return body

    async def health(request: web.Request) -> web.Response:
        await record(request)
        ok = app.health_status == 200
        payload = {
            "status": "healthy" if ok else "unhealthy",
            "version": app.version,
            "checks": [{"name": "database", "ok": ok}],
        }
        return web.json_response(
            payload, status=app.health_status, headers={"X-Version": app.version}
        )

    async def orders(request: web.Request) -> web.Response:
        body = json.loads(await record(request) or b"{}")
        return web.json_response({"id": 1, **body}, status=201)

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(float(request.query.get("s", "0.2")))
        return web.Response(text="slow but fine")

    async def hang(request: web.Request) -> web.Response:
        await record(request)
        await app.release.wait()
        return web.Response(text="late")

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("/health")

    async def big(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(
            body=b"[" + b"1," * (1024 * 1024) + b"1]", content_type="application/json"
        )

    web_app = web.Application()
    web_app.router.add_get("/health", health)
    web_app.router.add_post("/orders", orders)
    web_app.router.add_get("/slow", slow)
    web_app.router.add_get("/hang", hang)
    web_app.router.add_get("/redirect", redirect)
    web_app.router.add_get("/big", big)
    return web_app


async def start_app(version: str) -> App:
    app = App(version)
    runner = web.AppRunner(_app(app), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    app.runner = runner
    app.port = site._server.sockets[0].getsockname()[1]
    return app


@pytest.fixture
async def green() -> AsyncIterator[list[App]]:
    apps = [await start_app("v2"), await start_app("v2")]
    yield apps
    for app in apps:
        app.release.set()
        assert app.runner is not None
        await app.runner.cleanup()


@pytest.fixture
async def blue() -> AsyncIterator[App]:
    app = await start_app("v1")
    yield app
    app.release.set()
    assert app.runner is not None
    await app.runner.cleanup()


def closed_port() -> str:
    """An address nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def target(apps: list[App], version: str = "v2", role: SmokeRole = SmokeRole.TARGET) -> SmokeTarget:
    return SmokeTarget(Colour.GREEN, tuple(a.address for a in apps), role, version)


def checks(*raw: Mapping[str, object]) -> tuple[SmokeCheck, ...]:
    return parse_smoke({"checks": list(raw)}, "smoke").checks


# --------------------------------------------------------------------------- HTTP


async def test_every_server_is_checked_and_every_assertion_holds(green: list[App]) -> None:
    report = await run_smoke(
        target(green),
        checks(
            {
                "name": "health",
                "http": {
                    "path": "/health",
                    "headers": {"X-Smoke": "{colour}-{role}"},
                    "expect": {
                        "status": 200,
                        "json": {"status": "healthy", "checks[0].ok": True, "version": "{version}"},
                        "body_contains": "{version}",
                        "body_regex": '"version": "v\\d"',
                        "headers": {"x-version": "{version}"},
                        "max_latency": "2s",
                    },
                },
            }
        ),
    )
    assert report.ok, report.to_json()
    assert [r.target for r in report.results] == [a.address for a in green]
    assert all(r.detail.startswith(f"{r.target}: 200 in ") for r in report.results)
    for app in green:
        ((method, path, headers, _),) = app.requests
        assert (method, path) == ("GET", "/health")
        assert headers["X-Smoke"] == "green-target"
        assert headers["User-Agent"].startswith("bluegreen-smoke/")


async def test_a_failing_server_is_named_with_status_and_body(green: list[App]) -> None:
    green[1].health_status = 503
    report = await run_smoke(
        target(green), checks({"name": "health", "http": {"expect": {"status": 200}}})
    )
    assert not report.ok
    good, bad = report.results
    assert good.ok
    assert not bad.ok
    assert bad.detail.startswith(
        f"expected status 200, got 503 from {green[1].address} GET /health (body: "
        '{"status": "unhealthy", "version": "v2"'
    )
    event = report.event()
    assert isinstance(event, machine.SmokeFailed)
    assert [r.ok for r in event.results] == [True, False]


async def test_json_and_body_mismatches_are_all_listed(green: list[App]) -> None:
    report = await run_smoke(
        target(green[:1]),
        checks(
            {
                "name": "health",
                "http": {
                    "expect": {
                        "json": {"status": "ok", "checks[1].ok": True, "version": 2},
                        "body_contains": ["v3"],
                        "headers": {"X-Version": "v3"},
                    }
                },
            }
        ),
    )
    (result,) = report.results
    assert result.detail.startswith(
        "expected header X-Version: 'v3', got 'v2'; body does not contain 'v3'; "
        'expected JSON status = "ok", got "healthy"; '
        "JSON checks[1].ok: $.checks has 1 item(s); no index 1; "
        'expected JSON version = 2, got "v2" from '
    )


async def test_post_with_json_body_and_repeat(green: list[App]) -> None:
    report = await run_smoke(
        target(green[:1]),
        checks(
            {
                "name": "create-order",
                "http": {
                    "method": "POST",
                    "path": "/orders",
                    "json": {"status": "pending", "note": "smoke {version}"},
                    "repeat": 3,
                    "expect": {"status": 201, "json": {"id": 1, "note": "smoke v2"}},
                },
            }
        ),
    )
    assert report.ok, report.to_json()
    assert report.results[0].detail.startswith(f"{green[0].address}: 3/3 passed, slowest 201 in ")
    bodies = [json.loads(body) for _, _, _, body in green[0].requests]
    assert bodies == [{"status": "pending", "note": "smoke v2"}] * 3
    assert green[0].requests[0][2]["Content-Type"] == "application/json"


async def test_connection_refused_is_a_clear_failure() -> None:
    down = closed_port()
    report = await run_smoke(
        SmokeTarget(Colour.GREEN, (down,), version="v2"),
        checks({"name": "health", "http": "/health"}),
    )
    (result,) = report.results
    assert not result.ok
    assert result.detail == f"cannot connect to {down}: connection refused from {down} GET /health"


async def test_a_hung_server_times_out(green: list[App]) -> None:
    started = time.monotonic()
    report = await run_smoke(
        target(green[:1]), checks({"name": "hang", "http": {"path": "/hang", "timeout": "300ms"}})
    )
    assert time.monotonic() - started < 2
    (result,) = report.results
    assert result.detail == f"no complete answer within 0.3 s from {green[0].address} GET /hang"


async def test_latency_bound(green: list[App]) -> None:
    report = await run_smoke(
        target(green[:1]),
        checks(
            {"name": "slow", "http": {"path": "/slow?s=0.2", "expect": {"max_latency": "50ms"}}}
        ),
    )
    (result,) = report.results
    assert not result.ok
    assert "above the 50 ms latency bound" in result.detail
    assert result.duration_seconds >= 0.2


async def test_redirects_are_not_followed(green: list[App]) -> None:
    report = await run_smoke(
        target(green[:1]),
        checks({"name": "r", "http": {"path": "/redirect", "expect": {"status": 302}}}),
    )
    assert report.ok, report.to_json()
    assert [p for _, p, _, _ in green[0].requests] == ["/redirect"]


async def test_json_assertions_on_a_huge_body_fail_clearly(green: list[App]) -> None:
    report = await run_smoke(
        target(green[:1]),
        checks({"name": "big", "http": {"path": "/big", "expect": {"json": {"[0]": 1}}}}),
    )
    assert (
        "is larger than 1048576 bytes; JSON assertions cannot be checked"
        in report.results[0].detail
    )


async def test_the_run_deadline_stops_checks_and_skips_the_rest(green: list[App]) -> None:
    started = time.monotonic()
    report = await run_smoke(
        target(green[:1]),
        checks(
            {"name": "hang", "http": {"path": "/hang", "timeout": "10s"}},
            {"name": "after", "http": "/health"},
        ),
        timeout=0.3,
    )
    assert time.monotonic() - started < 2
    hang, after = report.results
    assert hang.detail == f"the smoke run's 0.3 s ran out from {green[0].address} GET /hang"
    assert after.detail == "not run: the smoke run's 0.3 s ran out"
    assert not report.ok


async def test_version_placeholder_needs_a_known_version(blue: App) -> None:
    report = await run_smoke(
        SmokeTarget(Colour.BLUE, (blue.address,), SmokeRole.LIVE, version=""),
        checks({"name": "v", "http": {"expect": {"body_contains": "{version}"}}}),
    )
    (result,) = report.results
    assert not result.ok
    assert "uses {version} but the version blue runs is unknown" in result.detail
    assert blue.requests == []


async def test_no_servers_is_a_failure_not_a_pass() -> None:
    report = await run_smoke(
        SmokeTarget(Colour.GREEN, ()), checks({"name": "h", "http": "/health"})
    )
    assert not report.ok
    assert report.results[0].detail == (
        "green has no servers; list them under upstreams.green.servers"
    )
    assert not SmokeReport().ok  # nothing ran: not a pass either


# --------------------------------------------------------------------------- SQL


async def make_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, status text, status_code varchar(20));"
        )
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_sql_check_passes_when_the_schema_has_what_is_needed(pg_dsn: str) -> None:
    await make_schema(pg_dsn)
    report = await run_smoke(
        SmokeTarget(Colour.GREEN, ()),
        checks({"name": "schema", "sql": {"require": ["orders.status_code", "orders"]}}),
        database_url=pg_dsn,
    )
    (result,) = report.results
    assert result.ok, result.detail
    assert (result.kind, result.target) == (CheckKind.SQL, "database")
    assert result.detail == "orders.status_code present (character varying(20)); orders present"


@pytest.mark.postgres
async def test_sql_check_names_what_is_missing(pg_dsn: str) -> None:
    await make_schema(pg_dsn)
    report = await run_smoke(
        SmokeTarget(Colour.BLUE, (), SmokeRole.LIVE),
        checks({"name": "schema", "sql": {"require": ["orders.phone", "users"], "min_version": 3}}),
        database_url=pg_dsn,
    )
    (result,) = report.results
    assert not result.ok
    assert result.detail == (
        "schema is missing what blue needs: orders.phone (column phone not found in table "
        "orders); users (table users not found on the search_path); version>=3 (no migration "
        "applied; need at least 3)"
    )


async def test_sql_check_without_a_database_or_reachable_server() -> None:
    report = await run_smoke(
        SmokeTarget(Colour.GREEN, ()), checks({"name": "schema", "sql": {"require": ["orders"]}})
    )
    assert "no database URL for the sql check" in report.results[0].detail
    url = f"postgresql://app:s3cret@{closed_port()}/app"
    report = await run_smoke(
        SmokeTarget(Colour.GREEN, ()),
        checks({"name": "schema", "sql": {"require": ["orders"]}}),
        database_url=url,
    )
    detail = report.results[0].detail
    assert detail.startswith("cannot connect to postgresql://app:***@127.0.0.1:")
    assert "s3cret" not in detail


# --------------------------------------------------------------------------- commands

SCRIPT_OK = (
    "import os, sys\n"
    "print('checking', os.environ['BLUEGREEN_COLOUR'], os.environ['BLUEGREEN_ROLE'])\n"
    "print('servers', os.environ['BLUEGREEN_SERVERS'], os.environ['BLUEGREEN_BASE_URL'])\n"
    "print('version', os.environ['BLUEGREEN_VERSION'], os.environ['EXTRA'], sys.argv[1])\n"
)


async def test_command_hook_gets_the_colour_and_passes_on_exit_0(green: list[App]) -> None:
    raw = {
        "name": "hook",
        "command": {
            "argv": [sys.executable, "-c", SCRIPT_OK, "{colour}"],
            "env": {"EXTRA": "x-{version}"},
        },
    }
    report = await run_smoke(target(green), checks(raw))
    (result,) = report.results
    assert result.ok, result.detail
    assert result.kind is CheckKind.COMMAND
    assert result.detail == "exit status 0"
    servers = ",".join(a.address for a in green)
    assert result.output_tail.splitlines() == [
        "checking green target",
        f"servers {servers} http://{green[0].address}",
        "version v2 x-v2 green",
    ]


async def test_command_hook_failure_keeps_the_output_tail() -> None:
    script = (
        "import sys\n"
        "for i in range(100): print('line', i)\n"
        "print('boom: orders broken', file=sys.stderr)\n"
        "sys.exit(3)"
    )
    report = await run_smoke(
        SmokeTarget(Colour.GREEN, ()),
        checks({"name": "hook", "command": [sys.executable, "-c", script]}),
    )
    (result,) = report.results
    assert not result.ok
    assert result.detail == "exit status 3 (last output: boom: orders broken)"
    lines = result.output_tail.splitlines()
    assert len(lines) == 20
    assert lines[-2:] == ["line 99", "boom: orders broken"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is dead for our purpose
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return status != "Z"
    return True


async def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started child', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    outcome = await run_command(CommandCheck(argv=(sys.executable, "-c", script), timeout=1.0))
    assert time.monotonic() - started < 5
    assert outcome.error == "did not finish within 1 s; killed it and its children"
    assert outcome.output_tail == "started child"
    child = int(pid_file.read_text())

    async def gone() -> bool:
        return not _alive(child)

    await eventually(gone, within=5)


async def test_missing_command_is_reported() -> None:
    outcome = await run_command(CommandCheck(argv=("./definitely-not-here.sh",)))
    assert outcome.describe() == "command not found: ./definitely-not-here.sh"
    assert not outcome.ok


# --------------------------------------------------------------------------- RunSmoke


async def test_run_smoke_action_checks_target_and_live_by_role(green: list[App], blue: App) -> None:
    config = parse_smoke(
        {
            "checks": [{"name": "health", "http": "/health"}],
            "target": [{"name": "new", "http": {"expect": {"json": {"version": "{version}"}}}}],
            "live": [{"name": "old", "http": {"expect": {"json": {"version": "{version}"}}}}],
        },
        "smoke",
    )
    servers = {Colour.GREEN: [a.address for a in green], Colour.BLUE: [blue.address]}
    report = await run_smoke_action(
        machine.RunSmoke(Colour.GREEN, Colour.BLUE),
        config,
        servers,
        version="v2",
        live_version="v1",
    )
    assert report.ok, report.to_json()
    seen = [(r.colour, r.role, r.name) for r in report.results]
    assert seen == [
        (Colour.GREEN, SmokeRole.TARGET, "health"),
        (Colour.GREEN, SmokeRole.TARGET, "health"),
        (Colour.GREEN, SmokeRole.TARGET, "new"),
        (Colour.GREEN, SmokeRole.TARGET, "new"),
        (Colour.BLUE, SmokeRole.LIVE, "health"),
        (Colour.BLUE, SmokeRole.LIVE, "old"),
    ]
    assert isinstance(report.event(), machine.SmokePassed)
    json.dumps(report.to_json())


async def test_old_colour_failing_after_migrations_fails_the_rollout_with_its_reason(
    green: list[App], blue: App
) -> None:
    blue.health_status = 500  # the old code does not work on the new schema
    servers = {Colour.GREEN: [a.address for a in green], Colour.BLUE: [blue.address]}
    report = await run_smoke_action(
        machine.RunSmoke(Colour.GREEN, Colour.BLUE),
        parse_smoke(None, "smoke"),
        servers,
        version="v2",
    )
    event = report.event()
    assert isinstance(event, machine.SmokeFailed)
    now = 1_000.0
    r, _ = machine.transition(None, machine.Start("v2", salt="s"), now)
    r, _ = machine.transition(r, machine.PreflightPassed(), now)
    r, actions = machine.transition(r, machine.MigrationsApplied(), now)
    assert machine.RunSmoke(Colour.GREEN, Colour.BLUE) in actions
    r, _ = machine.transition(r, event, now)
    assert r.failure is not None
    assert r.failure.code is Reason.OLD_COLOUR_SMOKE_FAILED
    assert f"expected status 2xx, got 500 from {blue.address} GET /health" in r.failure.message
    assert len(r.results.smoke) == 3
