"""Every error bluegreen raises on purpose.

One base class, never raised directly; one family per area. Library errors
(asyncpg, OSError, aiohttp) are translated into these at the boundary, with the
original kept as ``__cause__``. Messages say what went wrong, where, and what
to do next.
"""

from __future__ import annotations


class BluegreenError(Exception):
    """Something bluegreen refused to do or could not do."""


class UsageError(BluegreenError):
    """The command line or a request asked for something that cannot be done."""


class InvalidFieldError(UsageError, ValueError):
    """A value is malformed or out of range; ``field`` names it (the admin API answers 422)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ConfigError(BluegreenError):
    """The configuration is invalid; ``key`` names the offending path."""

    def __init__(self, key: str, problem: str, *, source: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        at = f"{key}: " if key else ""
        super().__init__(f"{where}{at}{problem}")


class StateError(BluegreenError):
    """The state store could not be read or written."""


class StateConflictError(StateError):
    """A compare-and-set lost: someone else wrote the state first."""

    def __init__(self, expected: int, found: int) -> None:
        self.expected = expected
        self.found = found
        super().__init__(
            f"state changed underneath: expected version {expected}, found {found}. "
            "Re-read the state and try again."
        )


class RolloutRecordError(StateError):
    """The stored rollout record is corrupt or was written by an incompatible version."""


class AdminError(BluegreenError):
    """Talking to the admin API failed (the CLI's side of it)."""


class AdminUnreachableError(AdminError):
    """The admin API could not be reached: wrong URL, not running, or not answering."""


class AdminRequestError(AdminError):
    """The admin API refused a request; ``status`` and ``field`` say why."""

    def __init__(
        self, status: int, message: str, *, field: str | None = None, body: object = None
    ) -> None:
        self.status = status
        self.field = field
        self.body = body
        where = f" ({field})" if field else ""
        super().__init__(f"admin API answered {status}{where}: {message}")


class IllegalTransitionError(BluegreenError):
    """The rollout cannot take this event in its current phase."""

    def __init__(self, phase: str, event: str, detail: str = "") -> None:
        self.phase = phase
        self.event = event
        suffix = f"; {detail}" if detail else ""
        super().__init__(f'cannot {event}: rollout phase is "{phase}"{suffix}')


class UpstreamError(BluegreenError):
    """An upstream server could not answer; ``status_hint`` is what the client gets."""

    status_hint = 502

    def __init__(self, colour: str, server: str, detail: str = "") -> None:
        self.colour = colour
        self.server = server
        suffix = f": {detail}" if detail else ""
        super().__init__(f"{colour} upstream {server}{suffix}")


class UpstreamConnectError(UpstreamError):
    """The upstream refused or reset the connection before the request was sent."""

    status_hint = 502


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not connect or answer within the configured timeout."""

    status_hint = 504


class UpstreamBusyError(UpstreamError):
    """Every pooled connection to the server is busy and its wait queue is full."""

    status_hint = 503

    def __init__(self, colour: str, server: str, detail: str = "") -> None:
        self.detail = detail
        super().__init__(colour, server, detail)


class MigrationError(BluegreenError):
    """A migration could not be loaded, checked or applied."""

    def __init__(self, message: str, *, migration: str | None = None) -> None:
        self.migration = migration
        super().__init__(message)


class MigrationFileError(MigrationError):
    """A migration file is malformed; the message starts with file:line."""


class MigrationLockTimeoutError(MigrationError):
    """DDL kept hitting lock_timeout (SQLSTATE 55P03) after every retry."""


class ChecksumMismatchError(MigrationError):
    """An applied migration's file changed since it was applied."""


class RunnerLockError(MigrationError):
    """Another migration runner holds the advisory lock."""


class HazardError(MigrationError):
    """The linter found hazards and the run was not told to allow them."""


class MigrationOrderError(MigrationError):
    """Running the pending migrations now would apply one out of order."""


class MigrationStatementError(MigrationError):
    """A statement of a migration failed; ``sqlstate`` is PostgreSQL's error code."""

    def __init__(
        self, message: str, *, migration: str | None = None, sqlstate: str | None = None
    ) -> None:
        self.sqlstate = sqlstate
        super().__init__(message, migration=migration)


class MigrationConnectError(MigrationError):
    """The migration runner could not connect to (or lost) its PostgreSQL database."""


class BackfillError(MigrationError):
    """A batched backfill could not run or stopped early; a rerun resumes after its last batch."""


class BackfillThrottledError(BackfillError):
    """Replication lag, lock waits or lock timeouts stayed above the backfill's bounds too long."""


class BackfillInterruptedError(BackfillError):
    """The backfill was asked to stop between two batches; a rerun resumes where it stopped."""


class DemoError(BluegreenError):
    """``bluegreen demo`` could not set up or run one of its parts."""


class DemoProcessError(DemoError):
    """A child process of the demo exited early or never became ready; ``name`` says which."""

    def __init__(self, name: str, message: str, *, log_path: str | None = None) -> None:
        self.name = name
        self.log_path = log_path
        super().__init__(message)


class DemoDatabaseError(DemoError):
    """No database for the demo: DATABASE_URL is unusable and no embedded PostgreSQL could start."""
