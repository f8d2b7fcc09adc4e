"""The seed's orders API, in the two versions a rollout moves between.

Run it as ``python -m bluegreen.demo.app --version v1|v2 --port P --database-url URL``.

Theory of operation
-------------------
The seed renames ``orders.status`` to ``status_code`` without downtime. The
HTTP API is the same in both versions (an order always has a ``status``
field); only the storage differs:

* **v1** reads and writes ``status``. It keeps working after the expand and
  migrate phases: the sync trigger of migration 0002 fills ``status_code``
  from whatever v1 writes.
* **v2** writes both ``status`` and ``status_code`` (the seed's transition
  model) and reads ``status_code``. Once the contract phase has dropped
  ``status``, v2 writes ``status_code`` only: a write that fails with
  "undefined column" re-checks the schema, switches off the legacy write and
  is retried once, so the contract never costs v2 a request. ``/health``
  re-checks the columns and switches the legacy write back on if a rollback
  of the contract brought ``status`` back.

Every response carries ``X-App-Version``. ``/health`` is the seed's: the
database answers, the migration version is at least the one this version
needs, and the columns it uses exist (via
:func:`bluegreen.migrations.schema.check_schema`); 503 otherwise.

Failure injection (for ``bluegreen demo --break green``) exists only when
the app runs with ``--controls``: ``POST /_demo/break`` with
``{"ratio": 0.5}`` makes exactly that share of the following API requests
answer 500 (deterministically: every second one at 0.5), ``DELETE
/_demo/break`` heals. The demo calls it on the app's own port, not through
the proxy, the moment green's weight reaches 50 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from bluegreen.errors import UsageError
from bluegreen.migrations.schema import check_schema

if TYPE_CHECKING:  # the app process itself never starts other processes
    from bluegreen.demo.processes import ManagedProcess, Supervisor

log = structlog.get_logger("bluegreen.demo.app")

VERSION_HEADER: Final = "X-App-Version"
STATUSES: Final = ("pending", "paid", "shipped", "delivered", "cancelled")
MAX_CUSTOMER_CHARS: Final = 200
MAX_AMOUNT: Final = Decimal("9999999999.99")  # numeric(12, 2)
DEFAULT_LIST_LIMIT: Final = 20
MAX_LIST_LIMIT: Final = 100
HEALTH_TIMEOUT: Final = 2.0
BASIS_POINTS: Final = 10_000
UNDEFINED_COLUMN: Final = "42703"


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """What one version of the app reads, writes and needs from the schema."""

    name: str
    read_column: str
    write_columns: tuple[str, ...]
    require: tuple[str, ...]  # for check_schema: the columns this version uses
    min_version: int  # the lowest migration version it works on

    @property
    def legacy_column(self) -> str | None:
        """The old column this version writes too while it exists (v2: ``status``)."""
        extra = [c for c in self.write_columns if c != self.read_column]
        return extra[0] if extra else None


_COMMON: Final = ("orders.id", "orders.customer", "orders.amount", "orders.created_at")
VERSIONS: Final[Mapping[str, VersionSpec]] = {
    # 0001 creates orders with status.
    "v1": VersionSpec("v1", "status", ("status",), (*_COMMON, "orders.status"), 1),
    # status_code is readable once 0004 (backfill) and 0005 (validate) ran.
    "v2": VersionSpec(
        "v2", "status_code", ("status", "status_code"), (*_COMMON, "orders.status_code"), 5
    ),
}


def version_spec(name: str) -> VersionSpec:
    """The spec of ``v1`` or ``v2``; :class:`UsageError` for anything else."""
    try:
        return VERSIONS[name]
    except KeyError:
        raise UsageError(
            f"unknown app version {name!r}; use one of {', '.join(VERSIONS)}"
        ) from None


# --------------------------------------------------------------------------- failure injection


class FailureInjector:
    """Makes an exact share of requests fail: at ratio r, request n fails when floor(n·r) grows.

    Deterministic on purpose: at 0.5 every second request fails, so a demo
    run and a test see the same thing every time.
    """

    def __init__(self, ratio: float = 0.0, *, delay: float = 0.0, health: bool = False) -> None:
        self._bp = 0
        self._count = 0
        self.delay = 0.0
        self.health = False
        self.configure(ratio, delay=delay, health=health)

    @property
    def ratio(self) -> float:
        """The share of requests that fail (0..1)."""
        return self._bp / BASIS_POINTS

    def configure(self, ratio: float, *, delay: float = 0.0, health: bool = False) -> None:
        """Set the failing share, an added delay (seconds) and whether /health fails too."""
        if not (isinstance(ratio, int | float) and 0.0 <= ratio <= 1.0) or isinstance(ratio, bool):
            raise ValueError(f"ratio must be a number from 0 to 1, got {ratio!r}")
        if not (isinstance(delay, int | float) and 0.0 <= delay <= 60.0) or isinstance(delay, bool):
            raise ValueError(f"delay must be 0..60 seconds, got {delay!r}")
        self._bp = round(ratio * BASIS_POINTS)
        self._count = 0
        self.delay = float(delay)
        self.health = bool(health)

    def should_fail(self) -> bool:
        """Count one request; True when it is one of the share that fails."""
        if self._bp == 0:
            return False
        self._count += 1
        before = (self._count - 1) * self._bp // BASIS_POINTS
        return self._count * self._bp // BASIS_POINTS > before

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``GET /_demo/break``."""
        return {"ratio": self.ratio, "delay": self.delay, "health": self.health}


# --------------------------------------------------------------------------- storage


def _order(row: asyncpg.Record) -> dict[str, Any]:
    amount: Decimal = row["amount"]
    created: datetime = row["created_at"]
    return {
        "id": row["id"],
        "customer": row["customer"],
        "amount": float(amount),
        "status": row["status"],
        "created_at": created.isoformat(),
    }


class OrdersStore:
    """The SQL of one app version, on a pool."""

    def __init__(self, pool: asyncpg.Pool, spec: VersionSpec) -> None:
        self.pool = pool
        self.spec = spec
        # v2 writes the old column too, for as long as it exists.
        self.legacy_writes = spec.legacy_column is not None

    @property
    def _select(self) -> str:
        return f"id, customer, amount, {self.spec.read_column} AS status, created_at"

    def _write_columns(self) -> tuple[str, ...]:
        if self.legacy_writes:
            return self.spec.write_columns
        return tuple(c for c in self.spec.write_columns if c != self.spec.legacy_column)

    async def column_exists(self, column: str) -> bool:
        """Whether ``orders.<column>`` exists now."""
        found = await self.pool.fetchval(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('orders') "
            "AND attname = $1 AND attnum > 0 AND NOT attisdropped",
            column,
        )
        return found is not None

    async def refresh_legacy(self) -> None:
        """Write the legacy column again when it exists, stop when it does not."""
        if self.spec.legacy_column is None:
            return
        exists = await self.column_exists(self.spec.legacy_column)
        if exists != self.legacy_writes:
            log.info(
                "legacy_writes_changed",
                version=self.spec.name,
                column=self.spec.legacy_column,
                enabled=exists,
            )
            self.legacy_writes = exists

    async def _write(self, build: Callable[[tuple[str, ...]], tuple[str, list[Any]]]) -> Any:
        """Run a write; if it named the legacy column and that column is gone, again without it."""
        columns = self._write_columns()
        sql, args = build(columns)
        try:
            return await self.pool.fetchrow(sql, *args)
        except asyncpg.PostgresError as exc:
            legacy = self.spec.legacy_column
            # Decided on this attempt's columns, not the shared flag: a concurrent request
            # may have switched the flag while this statement was already on its way.
            if getattr(exc, "sqlstate", None) != UNDEFINED_COLUMN or legacy not in columns:
                raise
            assert legacy is not None  # noqa: S101  # it is one of the columns written
            if await self.column_exists(legacy):
                raise
            if self.legacy_writes:
                log.info("legacy_column_dropped", version=self.spec.name, column=legacy)
                self.legacy_writes = False
        sql, args = build(self._write_columns())
        return await self.pool.fetchrow(sql, *args)

    async def get(self, order_id: int) -> dict[str, Any] | None:
        """One order, or None."""
        row = await self.pool.fetchrow(
            f"SELECT {self._select} FROM orders WHERE id = $1",  # noqa: S608  # fixed column names
            order_id,
        )
        return None if row is None else _order(row)

    async def recent(self, limit: int, status: str | None) -> list[dict[str, Any]]:
        """The newest orders, optionally only those with one status."""
        where = ""
        args: list[object] = [limit]
        if status is not None:
            where = f"WHERE {self.spec.read_column} = $2"
            args.append(status)
        rows = await self.pool.fetch(
            f"SELECT {self._select} FROM orders {where} ORDER BY id DESC LIMIT $1",  # noqa: S608
            *args,
        )
        return [_order(r) for r in rows]

    async def create(self, customer: str, amount: Decimal, status: str) -> dict[str, Any]:
        """Insert an order; returns it."""

        def build(columns: tuple[str, ...]) -> tuple[str, list[Any]]:
            names = ", ".join(("customer", "amount", *columns))
            values = ", ".join(["$1", "$2"] + ["$3"] * len(columns))
            sql = f"INSERT INTO orders ({names}) VALUES ({values}) RETURNING {self._select}"  # noqa: S608
            return sql, [customer, amount, status]

        row = await self._write(build)
        return _order(row)

    async def update_status(self, order_id: int, status: str) -> dict[str, Any] | None:
        """Change an order's status; None when it does not exist."""

        def build(columns: tuple[str, ...]) -> tuple[str, list[Any]]:
            sets = ", ".join(f"{c} = $2" for c in columns)
            sql = f"UPDATE orders SET {sets} WHERE id = $1 RETURNING {self._select}"  # noqa: S608
            return sql, [order_id, status]

        row = await self._write(build)
        return None if row is None else _order(row)


async def seed_orders(conn_or_url: asyncpg.Connection | str, count: int = 50_000) -> int:
    """Insert ``count`` orders in one statement (status only, as v1 writes them).

    Run it after migration 0001 and before 0002, so the backfill of 0004 has
    ``count`` rows to move. Deterministic contents; returns the row count.
    """
    if count < 0:
        raise UsageError(f"seed: expected a row count >= 0, got {count}")
    sql = (
        "INSERT INTO orders (customer, amount, status) "
        "SELECT 'customer-' || (n % 997), ((n * 37) % 100000) / 100.0, "
        "(ARRAY['pending','paid','shipped','delivered','cancelled'])[1 + n % 5] "
        "FROM generate_series(1, $1) AS n"
    )
    if isinstance(conn_or_url, str):
        conn = await asyncpg.connect(conn_or_url, timeout=10)
        try:
            result = await conn.execute(sql, count)
        finally:
            await conn.close()
    else:
        result = await conn_or_url.execute(sql, count)
    return int(result.rsplit(" ", 1)[-1])


# --------------------------------------------------------------------------- HTTP


@dataclass
class AppState:
    """What the handlers share."""

    spec: VersionSpec
    database_url: str
    failures: FailureInjector
    controls: bool
    pool_size: int
    store: OrdersStore | None = None
    in_flight: int = 0  # requests being handled, /_demo/* excluded


STATE: Final = web.AppKey("bluegreen_demo_state", AppState)


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def _store(request: web.Request) -> OrdersStore:
    store = request.app[STATE].store
    if store is None:
        raise _ApiError(503, "starting: the database pool is not ready yet")
    return store


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise _ApiError(415, "send a JSON body with Content-Type: application/json")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _ApiError(422, "the body must be a JSON object")
    return body


def _status_field(body: Mapping[str, Any], *, default: str | None) -> str:
    status = body.get("status", default)
    if status not in STATUSES:
        raise _ApiError(422, f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    return str(status)


def _order_id(request: web.Request) -> int:
    text = request.match_info["order_id"]
    if not text.isdigit() or len(text) > 18:
        raise _ApiError(404, f"no order {text!r}")
    return int(text)


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    path = request.path
    control = path.startswith("/_demo/")
    injectable = not control and path != "/version" and (path != "/health" or state.failures.health)
    if not control:
        state.in_flight += 1
    try:
        if injectable:
            failing = state.failures.should_fail()
            if state.failures.delay:
                await asyncio.sleep(state.failures.delay)
            if failing:
                return _json({"error": "injected failure (bluegreen demo --break)"}, 500)
        return await handler(request)
    except _ApiError as exc:
        return _json({"error": exc.message}, exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json({"error": exc.reason}, exc.status)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        log.warning(
            "request_failed",
            method=request.method,
            path=path,
            error=type(exc).__name__,
            detail=str(exc),
        )
        return _json({"error": f"database error: {type(exc).__name__}"}, 500)
    finally:
        if not control:
            state.in_flight -= 1


async def _add_version_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[VERSION_HEADER] = request.app[STATE].spec.name


async def get_order(request: web.Request) -> web.StreamResponse:
    """``GET /orders/{id}``."""
    order = await _store(request).get(_order_id(request))
    if order is None:
        raise _ApiError(404, f"no order {request.match_info['order_id']}")
    return _json(order)


async def list_orders(request: web.Request) -> web.StreamResponse:
    """``GET /orders?limit=&status=``: the newest orders."""
    text = request.query.get("limit", str(DEFAULT_LIST_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise _ApiError(422, f"limit must be 1..{MAX_LIST_LIMIT}; got {text!r}")
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise _ApiError(422, f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    orders = await _store(request).recent(int(text), status)
    return _json({"orders": orders})


def _amount(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _ApiError(422, f"amount must be a number; got {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _ApiError(422, f"amount must be a number; got {value!r}") from None
    if not amount.is_finite() or not Decimal(0) <= amount <= MAX_AMOUNT:
        raise _ApiError(422, f"amount must be from 0 to {MAX_AMOUNT}; got {value!r}")
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)  # as numeric(12, 2) rounds


async def create_order(request: web.Request) -> web.StreamResponse:
    """``POST /orders`` with ``{customer, amount, status?}``: 201 and the order."""
    body = await _body(request)
    customer = body.get("customer")
    if not isinstance(customer, str) or not 1 <= len(customer) <= MAX_CUSTOMER_CHARS:
        raise _ApiError(422, f"customer must be a string of 1..{MAX_CUSTOMER_CHARS} characters")
    order = await _store(request).create(
        customer, _amount(body.get("amount")), _status_field(body, default="pending")
    )
    return _json(order, 201)


async def update_order(request: web.Request) -> web.StreamResponse:
    """``PATCH /orders/{id}`` with ``{status}``."""
    order_id = _order_id(request)
    body = await _body(request)
    order = await _store(request).update_status(order_id, _status_field(body, default=None))
    if order is None:
        raise _ApiError(404, f"no order {order_id}")
    return _json(order)


async def health(request: web.Request) -> web.StreamResponse:
    """The seed's ``/health``: database, migration version, required columns; else 503."""
    state = request.app[STATE]
    answer: dict[str, Any] = {"version": state.spec.name}
    store = state.store
    try:
        if store is None:
            raise ConnectionError("the database pool is not ready yet")
        async with asyncio.timeout(HEALTH_TIMEOUT):
            async with store.pool.acquire() as conn:
                check = await check_schema(
                    conn, require=state.spec.require, min_version=state.spec.min_version
                )
            await store.refresh_legacy()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        answer |= {
            "status": "unhealthy",
            "database": "unreachable",
            "error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        }
        return _json(answer, 503)
    answer |= {
        "status": "healthy" if check.ok else "unhealthy",
        "database": "connected",
        "migration_version": check.current_version,
        "required_version": state.spec.min_version,
        "missing": list(check.missing),
        "checks": check.details,
    }
    if not check.ok:
        answer["reason"] = "missing required database columns or migrations"
    return _json(answer, 200 if check.ok else 503)


async def version(request: web.Request) -> web.StreamResponse:
    """``/version``: which version this is and which columns it uses."""
    state = request.app[STATE]
    store = state.store
    legacy = store.legacy_writes if store is not None else state.spec.legacy_column is not None
    writes = [c for c in state.spec.write_columns if legacy or c != state.spec.legacy_column]
    return _json(
        {
            "version": state.spec.name,
            "reads": state.spec.read_column,
            "writes": writes,
            "pid": os.getpid(),
        }
    )


async def get_break(request: web.Request) -> web.StreamResponse:
    """``GET /_demo/break``: the current failure injection and the requests in flight."""
    state = request.app[STATE]
    return _json({**state.failures.to_dict(), "in_flight": state.in_flight})


async def post_break(request: web.Request) -> web.StreamResponse:
    """``POST /_demo/break`` with ``{ratio, delay?, health?}``: start failing."""
    body = await _body(request)
    failures = request.app[STATE].failures
    try:
        failures.configure(
            body.get("ratio", 1.0),
            delay=body.get("delay", 0.0),
            health=bool(body.get("health", False)),
        )
    except ValueError as exc:
        raise _ApiError(422, str(exc)) from None
    log.warning("failure_injected", version=request.app[STATE].spec.name, **failures.to_dict())
    return _json(failures.to_dict())


async def delete_break(request: web.Request) -> web.StreamResponse:
    """``DELETE /_demo/break``: stop failing."""
    failures = request.app[STATE].failures
    failures.configure(0.0)
    log.info("failure_healed", version=request.app[STATE].spec.name)
    return _json(failures.to_dict())


async def _pool_context(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    # min_size=0: the app starts (and /health says why it is unhealthy) even
    # while the database is down; connections are opened on first use.
    pool = await asyncpg.create_pool(
        state.database_url,
        min_size=0,
        max_size=state.pool_size,
        command_timeout=10,
        timeout=5,  # connect
        max_inactive_connection_lifetime=120,
        server_settings={"application_name": f"bluegreen-demo-{state.spec.name}"},
    )
    state.store = OrdersStore(pool, state.spec)
    try:
        await state.store.refresh_legacy()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        log.warning("database_unreachable_at_start", error=str(exc))
    yield
    state.store = None
    try:
        await asyncio.wait_for(pool.close(), 5)
    except TimeoutError:
        pool.terminate()


def create_app(
    version_name: str,
    database_url: str,
    *,
    pool_size: int = 10,
    controls: bool = False,
    failures: FailureInjector | None = None,
) -> web.Application:
    """The orders API of one version (an aiohttp application; its pool opens on startup)."""
    spec = version_spec(version_name)
    if not 1 <= pool_size <= 1000:
        raise UsageError(f"--pool-size must be 1..1000, got {pool_size}")
    app = web.Application(middlewares=[_middleware], client_max_size=64 * 1024)
    app[STATE] = AppState(spec, database_url, failures or FailureInjector(), controls, pool_size)
    app.on_response_prepare.append(_add_version_header)
    app.cleanup_ctx.append(_pool_context)
    app.router.add_get("/orders", list_orders)
    app.router.add_post("/orders", create_order)
    app.router.add_get("/orders/{order_id}", get_order)
    app.router.add_patch("/orders/{order_id}", update_order)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    if controls:
        app.router.add_get("/_demo/break", get_break)
        app.router.add_post("/_demo/break", post_break)
        app.router.add_delete("/_demo/break", delete_break)
    return app


# --------------------------------------------------------------------------- controls client


async def set_failures(
    base_url: str,
    ratio: float,
    *,
    delay: float = 0.0,
    health: bool = False,
    session: aiohttp.ClientSession | None = None,
    request_timeout: float = 5.0,
) -> dict[str, Any]:
    """Make the app at ``base_url`` (started with ``--controls``) fail ``ratio`` of requests.

    ``ratio=0`` heals it. Returns the app's answer; raises
    :class:`aiohttp.ClientError` when the app cannot be reached.
    """
    url = base_url.rstrip("/") + "/_demo/break"
    own = session is None
    client = session or aiohttp.ClientSession()
    try:
        request = (
            client.delete(url, timeout=aiohttp.ClientTimeout(total=request_timeout))
            if ratio == 0
            else client.post(
                url,
                json={"ratio": ratio, "delay": delay, "health": health},
                timeout=aiohttp.ClientTimeout(total=request_timeout),
            )
        )
        async with request as response:
            response.raise_for_status()
            answer: dict[str, Any] = await response.json()
            return answer
    finally:
        if own:
            await client.close()


# --------------------------------------------------------------------------- process entry point


def app_argv(
    version_name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    controls: bool = True,
    pool_size: int = 10,
    python: str | None = None,
) -> list[str]:
    """The command that runs one app instance (pass the URL in the env as ``DATABASE_URL``).

    The URL stays out of argv so its password never shows in ``ps``.
    """
    version_spec(version_name)
    argv = [
        python or sys.executable, "-m", "bluegreen.demo.app",
        "--version", version_name,
        "--host", host,
        "--port", str(port),
        "--pool-size", str(pool_size),
    ]  # fmt: skip
    if controls:
        argv.append("--controls")
    return argv


@dataclass(frozen=True, slots=True)
class RunningApp:
    """An app instance started by :func:`start_app`: its process and base URL."""

    process: ManagedProcess
    version: str
    url: str

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1])


async def start_app(
    supervisor: Supervisor,
    name: str,
    version_name: str,
    database_url: str,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    controls: bool = True,
    pool_size: int = 10,
    within: float = 30.0,
) -> RunningApp:
    """Start one app instance under ``supervisor``; return once it answers ``/version``.

    Port 0 (the default) lets the app pick a free port, read back from its
    ``app_listening`` log line, so no other process can take it in between.
    ``/health`` may still be 503 (v2 before its migrations): await it with
    ``app.process.wait_http(app.url + "/health")`` when the caller needs it.
    """
    process = supervisor.start(
        name,
        app_argv(version_name, port, host=host, controls=controls, pool_size=pool_size),
        env={"DATABASE_URL": database_url},
        stop_timeout=15.0,
    )
    line = await process.wait_output(r'^\{.*"event": "app_listening".*\}$', within=within)
    bound = int(json.loads(line.group(0))["port"])
    url = f"http://{host}:{bound}"
    await process.wait_http(f"{url}/version", within=within)
    return RunningApp(process, version_name, url)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bluegreen.demo.app",
        description=(
            "The demo orders API. v1 reads and writes orders.status; v2 writes status and "
            "status_code and reads status_code. SIGTERM/SIGINT: stop accepting, finish "
            "in-flight requests, exit 0."
        ),
    )
    parser.add_argument("--version", required=True, choices=sorted(VERSIONS), dest="app_version")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    parser.add_argument("--pool-size", type=int, default=10, help="max database connections")
    parser.add_argument(
        "--controls", action="store_true", help="enable /_demo/break (failure injection)"
    )
    parser.add_argument(
        "--fail-ratio",
        type=float,
        default=0.0,
        help="share of API requests to answer with 500 from the start (0..1)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        help="seconds in-flight requests get after SIGTERM",
    )
    return parser


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = 10.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (or ``stop``), then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        addresses: Sequence[Any] = runner.addresses
        bound = addresses[0][1] if addresses else port  # the real port when 0 was asked for
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("app_listening", version=app[STATE].spec.name, host=host, port=bound)
        await stop.wait()
        log.info("app_stopping", version=app[STATE].spec.name)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
    log.info("app_stopped", version=app[STATE].spec.name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one app instance; the process exit code."""
    from bluegreen.logs import configure_logging

    args = _parser().parse_args(argv)
    configure_logging(stream=sys.stdout)
    if not args.database_url:
        print("bluegreen.demo.app: set --database-url or DATABASE_URL", file=sys.stderr)
        return 2
    if not 0 <= args.port < 65536:
        print(f"bluegreen.demo.app: --port {args.port} out of range", file=sys.stderr)
        return 2
    try:
        failures = FailureInjector(args.fail_ratio)
        app = create_app(
            args.app_version,
            args.database_url,
            pool_size=args.pool_size,
            controls=args.controls,
            failures=failures,
        )
    except (UsageError, ValueError) as exc:
        print(f"bluegreen.demo.app: {exc}", file=sys.stderr)
        return 2
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(app, args.host, args.port, shutdown_timeout=args.shutdown_timeout))
    except OSError as exc:
        print(
            f"bluegreen.demo.app: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
