"""Smoke tests: checks sent straight to one colour's servers, before it gets traffic.

The I/O shell behind the controller's ``RunSmoke`` action. Nothing goes
through the traffic split: every HTTP check is sent to *each* server of the
colour (each must pass), SQL checks ask the shared database whether the
schema has what the version needs (the seed's ``/health``, via
:func:`bluegreen.migrations.schema.check_schema`), and a command hook runs a
program of the operator's (exit status 0 passes).

Checks run in configuration order (a later check may rely on an earlier one,
e.g. one creates an order, the next reads it), each against all servers at
once. The whole run has one deadline; checks it cuts short, or never starts,
are reported as failed with that reason, so a hung server cannot stall a
rollout. Library errors (aiohttp, OSError, asyncpg) become result details at
the boundary: a smoke run never raises for a failing check.

:func:`run_smoke` tests one colour; :func:`run_smoke_action` performs a
``RunSmoke`` action (the target colour, and the live colour again after the
migrations); :meth:`SmokeReport.event` is the event the runner feeds back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import aiohttp
import asyncpg
import structlog

from bluegreen import __version__
from bluegreen.controller.machine import RunSmoke, SmokeFailed, SmokePassed, SmokeResult
from bluegreen.errors import MigrationError, UsageError
from bluegreen.health.probes import describe_client_error
from bluegreen.migrations.schema import check_schema
from bluegreen.rollout_config import (
    JSON,
    CheckKind,
    CommandCheck,
    HttpCheck,
    HttpExpect,
    SmokeCheck,
    SmokeConfig,
    SmokeRole,
    SqlCheck,
    json_equal,
    substitute,
    uses_version,
)
from bluegreen.routing import Colour

log = structlog.get_logger("bluegreen.smoke")

MAX_BODY_BYTES: Final = 1024 * 1024  # read at most this much of an answer
BODY_SNIPPET_CHARS: Final = 200
OUTPUT_TAIL_BYTES: Final = 4096
OUTPUT_TAIL_LINES: Final = 20
MAX_DETAIL_CHARS: Final = 600  # details are stored in the rollout record
USER_AGENT: Final = f"bluegreen-smoke/{__version__}"
TARGET_DATABASE: Final = "database"


# =========================================================================== results


@dataclass(frozen=True, slots=True)
class SmokeTarget:
    """The colour under test: its servers (``host:port``), why, and the version it runs."""

    colour: Colour
    servers: tuple[str, ...]
    role: SmokeRole = SmokeRole.TARGET
    version: str = ""  # "" when unknown (e.g. the live colour of a first rollout)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check against one target (a server, the database, or the command)."""

    name: str
    kind: CheckKind
    colour: Colour
    role: SmokeRole
    target: str
    ok: bool
    duration_seconds: float
    detail: str
    output_tail: str = ""  # command hooks: the last lines of their output

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the rollout record, ``--output json``)."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "colour": self.colour.value,
            "role": self.role.value,
            "target": self.target,
            "ok": self.ok,
            "duration_seconds": round(self.duration_seconds, 4),
            "detail": self.detail,
            "output_tail": self.output_tail,
        }

    def to_machine(self) -> SmokeResult:
        """The controller's record of this result (details capped in length)."""
        return SmokeResult(
            colour=self.colour,
            name=self.name,
            ok=self.ok,
            detail=_cap(self.detail, MAX_DETAIL_CHARS),
            duration_seconds=round(self.duration_seconds, 4),
        )


@dataclass(frozen=True, slots=True)
class SmokeReport:
    """Every result of a smoke run; ``ok`` when all passed (and at least one ran)."""

    results: tuple[CheckResult, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there were results and every one passed."""
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        """The failed results, in order."""
        return tuple(r for r in self.results if not r.ok)

    def __add__(self, other: SmokeReport) -> SmokeReport:
        return SmokeReport((*self.results, *other.results))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"ok": self.ok, "results": [r.to_json() for r in self.results]}

    def event(self) -> SmokePassed | SmokeFailed:
        """The event for the rollout controller."""
        results = tuple(r.to_machine() for r in self.results)
        return SmokePassed(results) if self.ok else SmokeFailed(results)


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# =========================================================================== entry points


async def run_smoke(
    target: SmokeTarget,
    checks: Sequence[SmokeCheck],
    *,
    database_url: str | None = None,
    timeout: float = 120.0,  # noqa: ASYNC109  # one deadline for the whole run, reported per check
    session: aiohttp.ClientSession | None = None,
) -> SmokeReport:
    """Run ``checks`` against ``target`` in order; never raises for a failing check.

    ``database_url`` is used by SQL checks without their own. ``session`` is
    a shared aiohttp session (one is made and closed otherwise). The run
    stops at ``timeout`` seconds: unfinished checks fail with that reason.
    """
    own = session is None
    if session is None:
        session = _session()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    results: list[CheckResult] = []
    bound = log.bind(colour=target.colour.value, role=target.role.value)
    try:
        for check in checks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                results += _not_run(
                    check, target, f"not run: the smoke run's {timeout:g} s ran out"
                )
                continue
            found = await _run_check(check, target, session, database_url, remaining, timeout)
            results += found
            for r in found:
                if not r.ok:
                    bound.warning(
                        "smoke_check_failed", check=r.name, target=r.target, detail=r.detail
                    )
    finally:
        if own:
            await session.close()
    report = SmokeReport(tuple(results))
    bound.info("smoke_finished", ok=report.ok, checks=len(checks), failed=len(report.failures))
    return report


async def run_smoke_action(
    action: RunSmoke,
    config: SmokeConfig,
    servers: Mapping[Colour, Sequence[str]],
    *,
    version: str,
    live_version: str | None = None,
    database_url: str | None = None,
    default_path: str = "/health",
    session: aiohttp.ClientSession | None = None,
) -> SmokeReport:
    """Perform a ``RunSmoke``: test the target colour, and the live one again if asked.

    ``version`` is the version being rolled out (the target runs it);
    ``live_version`` the one the live colour runs, if known. Both colours are
    tested at the same time. Feed ``report.event()`` back to the controller.
    """
    own = session is None
    if session is None:
        session = _session()
    try:
        runs = [
            run_smoke(
                SmokeTarget(
                    action.colour, tuple(servers.get(action.colour, ())), SmokeRole.TARGET, version
                ),
                config.checks_for(action.colour, SmokeRole.TARGET, default_path=default_path),
                database_url=config.database_url or database_url,
                timeout=config.timeout,
                session=session,
            )
        ]
        if action.old_colour is not None:
            old = action.old_colour
            runs.append(
                run_smoke(
                    SmokeTarget(
                        old, tuple(servers.get(old, ())), SmokeRole.LIVE, live_version or ""
                    ),
                    config.checks_for(old, SmokeRole.LIVE, default_path=default_path),
                    database_url=config.database_url or database_url,
                    timeout=config.timeout,
                    session=session,
                )
            )
        reports = await asyncio.gather(*runs)
    finally:
        if own:
            await session.close()
    total = SmokeReport()
    for report in reports:
        total = total + report
    return total


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64),
        headers={"User-Agent": USER_AGENT},
        auto_decompress=True,
    )


def _not_run(check: SmokeCheck, target: SmokeTarget, why: str) -> list[CheckResult]:
    return [
        CheckResult(check.name, check.kind, target.colour, target.role, where, False, 0.0, why)
        for where in _targets_of(check, target)
    ]


def _targets_of(check: SmokeCheck, target: SmokeTarget) -> tuple[str, ...]:
    if check.kind is CheckKind.HTTP:
        return target.servers or ("(no servers)",)
    if isinstance(check.spec, CommandCheck):
        return (_command_target(check.spec),)
    return (TARGET_DATABASE,)


def _command_target(spec: CommandCheck) -> str:
    return _cap(" ".join(spec.argv), 100)


async def _run_check(
    check: SmokeCheck,
    target: SmokeTarget,
    session: aiohttp.ClientSession,
    database_url: str | None,
    remaining: float,
    run_timeout: float,
) -> list[CheckResult]:
    missing_version = not target.version and any(uses_version(t) for t in _texts_of(check))
    if missing_version:
        return _not_run(
            check,
            target,
            f"the check uses {{version}} but the version {target.colour} runs is unknown; "
            "move it to the smoke.target list or drop the placeholder",
        )
    spec = check.spec
    if isinstance(spec, HttpCheck):
        if not target.servers:
            return _not_run(
                check,
                target,
                f"{target.colour} has no servers; list them under "
                f"upstreams.{target.colour}.servers",
            )
        coros = [
            _http_check(check.name, spec, server, target, session, remaining, run_timeout)
            for server in target.servers
        ]
        return list(await asyncio.gather(*coros))
    if isinstance(spec, SqlCheck):
        return [await _sql_check(check.name, spec, target, database_url, remaining, run_timeout)]
    return [await _command_check(check.name, spec, target, remaining, run_timeout)]


def _texts_of(check: SmokeCheck) -> Iterable[str]:
    spec = check.spec
    if isinstance(spec, HttpCheck):
        yield spec.path
        yield from (v for _, v in spec.headers)
        if spec.body is not None:
            yield spec.body
        if spec.has_json_body:
            yield json.dumps(spec.json_body)
        yield from spec.expect.body_contains
        yield from (p.pattern for p in spec.expect.body_regex)
        yield from (v for _, v in spec.expect.headers)
        yield from (json.dumps(v) for _, v in spec.expect.json)
    elif isinstance(spec, CommandCheck):
        yield from spec.argv
        yield from (v for _, v in spec.env)


# =========================================================================== HTTP


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    truncated: bool
    seconds: float


@dataclass(slots=True)
class _Placeholders:
    colour: str
    version: str
    role: str
    cache: dict[str, re.Pattern[str]] = field(default_factory=dict)

    def text(self, value: str) -> str:
        return substitute(value, colour=self.colour, version=self.version, role=self.role)

    def json(self, value: JSON) -> JSON:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.json(v) for k, v in value.items()}
        return value

    def regex(self, pattern: re.Pattern[str]) -> re.Pattern[str]:
        source = pattern.pattern
        if "{" not in source:
            return pattern
        escaped = substitute(
            source,
            colour=re.escape(self.colour),
            version=re.escape(self.version),
            role=re.escape(self.role),
        )
        if escaped not in self.cache:
            self.cache[escaped] = re.compile(escaped, pattern.flags)
        return self.cache[escaped]


async def _http_check(
    name: str,
    spec: HttpCheck,
    server: str,
    target: SmokeTarget,
    session: aiohttp.ClientSession,
    remaining: float,
    run_timeout: float,
) -> CheckResult:
    ph = _Placeholders(target.colour.value, target.version, target.role.value)
    path = ph.text(spec.path)
    where = f"from {server} {spec.method} {path}"
    slowest = 0.0
    started = time.monotonic()

    def result(ok: bool, detail: str) -> CheckResult:
        return CheckResult(
            name,
            CheckKind.HTTP,
            target.colour,
            target.role,
            server,
            ok,
            slowest or time.monotonic() - started,
            detail,
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + remaining
    for attempt in range(1, spec.repeat + 1):
        prefix = f"attempt {attempt}/{spec.repeat}: " if spec.repeat > 1 else ""
        left = deadline - loop.time()
        if left <= 0:
            return result(
                False, f"{prefix}stopped: the smoke run's {run_timeout:g} s ran out {where}"
            )
        try:
            answer = await _request(session, spec, server, path, ph, min(spec.timeout, left))
        except _RequestError as exc:
            cut = left < spec.timeout and exc.timed_out
            why = f"the smoke run's {run_timeout:g} s ran out" if cut else exc.message
            return result(False, f"{prefix}{why} {where}")
        slowest = max(slowest, answer.seconds)
        problems = _assess(answer, spec.expect, ph)
        if problems:
            return result(
                False, f"{prefix}{'; '.join(problems)} {where} (body: {_snippet(answer)})"
            )
    status = f"{answer.status} in {_ms(slowest)}"
    summary = f"{spec.repeat}/{spec.repeat} passed, slowest {status}" if spec.repeat > 1 else status
    return result(True, f"{server}: {summary}")


class _RequestError(Exception):
    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


async def _request(
    session: aiohttp.ClientSession,
    spec: HttpCheck,
    server: str,
    path: str,
    ph: _Placeholders,
    timeout: float,  # noqa: ASYNC109  # passed to aiohttp as the request's total timeout
) -> _Answer:
    headers = {k: ph.text(v) for k, v in spec.headers}
    data: bytes | None = None
    if spec.has_json_body:
        data = json.dumps(ph.json(spec.json_body)).encode()
        headers.setdefault("Content-Type", "application/json")
    elif spec.body is not None:
        data = ph.text(spec.body).encode()
    url = f"http://{server}{path}"
    start = time.monotonic()
    try:
        async with session.request(
            spec.method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,  # a smoke test sees the real answer
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            body, truncated = await _read_body(response.content, MAX_BODY_BYTES)
            seconds = time.monotonic() - start
            return _Answer(response.status, dict(response.headers), body, truncated, seconds)
    except TimeoutError:
        raise _RequestError(f"no complete answer within {timeout:g} s", timed_out=True) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise _RequestError(describe_client_error(exc, server)) from None


async def _read_body(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.read(65536)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True


def _assess(answer: _Answer, expect: HttpExpect, ph: _Placeholders) -> list[str]:
    problems: list[str] = []
    if answer.status not in expect.status:
        problems.append(f"expected status {expect.status}, got {answer.status}")
    lowered = {k.lower(): v for k, v in answer.headers.items()}
    for name, wanted in expect.headers:
        value = ph.text(wanted)
        got = lowered.get(name.lower())
        if got != value:
            shown = "no such header" if got is None else repr(got)
            problems.append(f"expected header {name}: {value!r}, got {shown}")
    text: str | None = None
    if expect.body_contains or expect.body_regex:
        text = answer.body.decode("utf-8", errors="replace")
        for needle in expect.body_contains:
            if ph.text(needle) not in text:
                problems.append(f"body does not contain {ph.text(needle)!r}")
        for pattern in expect.body_regex:
            if ph.regex(pattern).search(text) is None:
                problems.append(f"body does not match /{ph.regex(pattern).pattern}/")
    if expect.json:
        problems += _assess_json(answer, expect, ph)
    if expect.max_latency is not None and answer.seconds > expect.max_latency:
        problems.append(
            f"took {_ms(answer.seconds)}, above the {_ms(expect.max_latency)} latency bound"
        )
    return problems


def _assess_json(answer: _Answer, expect: HttpExpect, ph: _Placeholders) -> list[str]:
    if answer.truncated:
        return [f"body is larger than {MAX_BODY_BYTES} bytes; JSON assertions cannot be checked"]
    try:
        document = json.loads(answer.body)
    except ValueError as exc:
        return [f"body is not JSON ({exc.args[0] if exc.args else exc})"]
    problems = []
    for path, wanted in expect.json:
        value = ph.json(wanted)
        found, got, problem = path.lookup(document)
        if not found:
            problems.append(f"JSON {path.text}: {problem}")
        elif not json_equal(got, value):
            problems.append(
                f"expected JSON {path.text} = {json.dumps(value)}, got {_json_snippet(got)}"
            )
    return problems


def _json_snippet(value: object) -> str:
    return _cap(json.dumps(value), 80)


def _snippet(answer: _Answer) -> str:
    text = " ".join(answer.body.decode("utf-8", errors="replace").split())
    if not text:
        return "empty"
    return _cap(text, BODY_SNIPPET_CHARS)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# =========================================================================== SQL


async def _sql_check(
    name: str,
    spec: SqlCheck,
    target: SmokeTarget,
    database_url: str | None,
    remaining: float,
    run_timeout: float,
) -> CheckResult:
    url = spec.database_url or database_url
    started = time.monotonic()

    def result(ok: bool, detail: str) -> CheckResult:
        return CheckResult(
            name, CheckKind.SQL, target.colour, target.role, TARGET_DATABASE, ok,
            time.monotonic() - started, detail,
        )  # fmt: skip

    if not url:
        return result(
            False,
            "no database URL for the sql check: set smoke.database_url (or the check's "
            "database_url, e.g. ${DATABASE_URL})",
        )
    try:
        async with asyncio.timeout(remaining):
            answer = await check_schema(url, require=spec.require, min_version=spec.min_version)
    except TimeoutError:
        return result(False, f"stopped: the smoke run's {run_timeout:g} s ran out")
    except (MigrationError, UsageError) as exc:  # connect errors, already worded (URL masked)
        return result(False, str(exc))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        return result(False, f"schema query failed: {type(exc).__name__}: {exc}")
    details = answer.details
    if answer.ok:
        parts = [f"{key} {details[key]}" for key in spec.require if key in details]
        if spec.min_version is not None:
            parts.append(f"migration version {answer.current_version} applied")
        return result(True, "; ".join(parts) or "schema as required")
    missing = "; ".join(f"{key} ({details.get(key, 'missing')})" for key in answer.missing)
    return result(False, f"schema is missing what {target.colour} needs: {missing}")


# =========================================================================== commands


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """How a command ended: exit status (None if it never ran or was killed), output tail."""

    exit_status: int | None
    output_tail: str
    seconds: float
    error: str | None = None  # could not start, or timed out

    @property
    def ok(self) -> bool:
        """Exit status 0."""
        return self.error is None and self.exit_status == 0

    def describe(self) -> str:
        """``exit status 0``, ``exit status 3``, ``killed by SIGKILL`` or the error."""
        if self.error is not None:
            return self.error
        assert self.exit_status is not None  # noqa: S101  # no error means it exited
        if self.exit_status < 0:
            try:
                name = signal.Signals(-self.exit_status).name
            except ValueError:
                name = f"signal {-self.exit_status}"
            return f"killed by {name}"
        return f"exit status {self.exit_status}"


async def run_command(
    spec: CommandCheck,
    *,
    extra_env: Mapping[str, str] | None = None,
    timeout: float | None = None,  # noqa: ASYNC109  # killed (with its process group) at the deadline
) -> CommandOutcome:
    """Run ``spec.argv`` without a shell, keep the tail of its output, kill it at the deadline.

    The command gets its own process group, so a timeout also kills what it
    started. Output (stdout and stderr together) is read as it comes; only the
    last :data:`OUTPUT_TAIL_BYTES` are kept.
    """
    limit = spec.timeout if timeout is None else min(spec.timeout, timeout)
    env = {**os.environ, **dict(spec.env), **(extra_env or {})}
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        where = f" (in {spec.cwd})" if spec.cwd else ""
        return CommandOutcome(None, "", 0.0, f"command not found: {spec.argv[0]}{where}")
    except PermissionError:
        return CommandOutcome(
            None, "", 0.0, f"not allowed to run {spec.argv[0]}: is it executable?"
        )
    except OSError as exc:
        return CommandOutcome(None, "", 0.0, f"cannot run {spec.argv[0]}: {exc.strerror or exc}")
    tail: deque[bytes] = deque()
    assert proc.stdout is not None  # noqa: S101  # stdout=PIPE
    try:
        async with asyncio.timeout(limit):
            await _keep_tail(proc.stdout, tail)
            status = await proc.wait()
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        return CommandOutcome(
            None, _tail_text(tail), time.monotonic() - started,
            f"did not finish within {limit:g} s; killed it and its children",
        )  # fmt: skip
    except BaseException:  # cancelled: never leave the command running
        _kill_group(proc)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    return CommandOutcome(status, _tail_text(tail), time.monotonic() - started)


async def _keep_tail(stream: asyncio.StreamReader, tail: deque[bytes]) -> None:
    size = 0
    while chunk := await stream.read(65536):
        tail.append(chunk)
        size += len(chunk)
        while size - len(tail[0]) >= OUTPUT_TAIL_BYTES:
            size -= len(tail.popleft())


def _tail_text(tail: Iterable[bytes]) -> str:
    text = b"".join(tail)[-OUTPUT_TAIL_BYTES:].decode("utf-8", errors="replace")
    lines = text.rstrip("\n").splitlines()[-OUTPUT_TAIL_LINES:]
    return "\n".join(lines)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def command_env(target: SmokeTarget) -> dict[str, str]:
    """What a command hook learns about the colour under test."""
    return {
        "BLUEGREEN_COLOUR": target.colour.value,
        "BLUEGREEN_ROLE": target.role.value,
        "BLUEGREEN_SERVERS": ",".join(target.servers),
        "BLUEGREEN_BASE_URL": f"http://{target.servers[0]}" if target.servers else "",
        "BLUEGREEN_VERSION": target.version,
    }


async def _command_check(
    name: str, spec: CommandCheck, target: SmokeTarget, remaining: float, run_timeout: float
) -> CheckResult:
    ph = _Placeholders(target.colour.value, target.version, target.role.value)
    spec = replace(
        spec,
        argv=tuple(ph.text(a) for a in spec.argv),
        env=tuple((k, ph.text(v)) for k, v in spec.env),
    )
    outcome = await run_command(spec, extra_env=command_env(target), timeout=remaining)
    detail = outcome.describe()
    if outcome.error is not None and remaining < spec.timeout and outcome.seconds >= remaining:
        detail = f"stopped: the smoke run's {run_timeout:g} s ran out; killed it and its children"
    last = outcome.output_tail.splitlines()[-1:] if outcome.output_tail else []
    if last and not outcome.ok:
        detail += f" (last output: {_cap(last[0], BODY_SNIPPET_CHARS)})"
    return CheckResult(
        name, CheckKind.COMMAND, target.colour, target.role, _command_target(spec),
        outcome.ok, outcome.seconds, detail, outcome.output_tail,
    )  # fmt: skip
