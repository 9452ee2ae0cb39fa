"""
Every error abadges raises on purpose derives from `AbadgesError`:

    AbadgesError
    ├── BadgeErrorGroup (also an ExceptionGroup)
    ├── ConfigurationError
    │   └── SchemaError
    ├── NotConnectedError
    ├── BadgeDefinitionError
    │   └── BadgeAlreadyRegisteredError
    ├── BadgeNotRegisteredError
    ├── InvalidStateError
    ├── InvalidAwardError
    ├── InvalidLevelError
    ├── QueueUnavailableError
    ├── InvalidJobError
    ├── CheckpointError
    ├── BackfillJobError
    └── CredentialError

Exceptions raised by a badge's own `award()` or `freeze()` are not wrapped: whenever badges
of an event fail, the call raises one `BadgeErrorGroup` holding their errors as they are,
each with a note naming the badge and the event. `except AbadgesError` catches the group;
`except* SomeError` picks out its members.

`is_transient(exc)` is the retry rule: connection trouble that may pass.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from typing import Self

    from .awards import Award

__all__ = [
    "AbadgesError",
    "BackfillJobError",
    "BadgeAlreadyRegisteredError",
    "BadgeDefinitionError",
    "BadgeErrorGroup",
    "BadgeNotRegisteredError",
    "CheckpointError",
    "ConfigurationError",
    "CredentialError",
    "InvalidAwardError",
    "InvalidJobError",
    "InvalidLevelError",
    "InvalidStateError",
    "NotConnectedError",
    "QueueUnavailableError",
    "SchemaError",
    "is_transient",
]


class AbadgesError(Exception):
    """Base class of every error abadges raises on purpose."""


class BadgeErrorGroup(ExceptionGroup[Exception], AbadgesError):
    """Raised when badges of an event (or of a deferred job) failed: one group, also for one
    failure, never nested. `exceptions` are the badges' errors, each with a note naming the
    badge and the event; `recorded` holds the awards recorded (and announced) before it was
    raised, those of the badges that did not fail.

    Errors found before any badge runs (no user, not connected, a bad `force_timestamp`)
    are raised on their own, not in a group.
    """

    recorded: list[Award]

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], recorded: Sequence[Award] = ()
    ) -> Self:
        group = super().__new__(cls, message, exceptions)
        group.recorded = list(recorded)
        return group

    def __init__(
        self, message: str, exceptions: Sequence[Exception], recorded: Sequence[Award] = ()
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> BadgeErrorGroup:  # type: ignore[override]
        # `except*` and split() build their parts with derive(): keep the type and `recorded`.
        return BadgeErrorGroup(self.message, excs, self.recorded)


class ConfigurationError(AbadgesError):
    """Raised when a setting cannot work: an unsupported database URL or URL option, a missing
    driver, `configure()` called while connected, or a PostgreSQL URL that lacks
    `?statement_cache_size=0` behind PgBouncer in transaction mode."""


class NotConnectedError(AbadgesError):
    """Raised when a call needs the database before `connect()` or `lifespan()` opened it."""


class BadgeDefinitionError(AbadgesError):
    """Raised when `register()` refuses a badge class; the message names the class and the
    attribute at fault."""


class BadgeAlreadyRegisteredError(BadgeDefinitionError):
    """Raised when `register()` is given a class whose slug another class already holds."""


class BadgeNotRegisteredError(AbadgesError):
    """Raised when a slug names no registered badge."""


class InvalidStateError(AbadgesError):
    """Raised when the state given to `possibly_award_badge()` cannot be used: no `user`,
    a user without an identity, or a naive `force_timestamp`. Nothing is recorded."""


class InvalidAwardError(AbadgesError):
    """Raised when a badge's `award()` returns something other than `BadgeAwarded` or
    `None` (nothing is recorded for that badge), or its `progress()` something other than
    `Progress` or `None`."""


class InvalidLevelError(AbadgesError):
    """Raised when a level is outside `1..len(levels)`, or missing from the `BadgeAwarded`
    of a badge with several levels. Nothing is recorded for that badge."""


class QueueUnavailableError(AbadgesError):
    """Raised when Redis does not take a deferred badge's job within about a second. The
    event's inline badges are recorded all the same; nothing of its deferred badges is."""


class InvalidJobError(AbadgesError):
    """Raised in the worker when a queued payload is not an abadges job it can run (not JSON,
    another payload version, a missing or mistyped field). Nothing of it is executed."""


class CheckpointError(AbadgesError):
    """Raised when a backfill's checkpoint does not fit the run that names it: other badges or
    options, or other users in the place where it stopped."""


class BackfillJobError(AbadgesError):
    """An error of a backfill batch that a worker ran, as the worker reported it; also raised
    when a batch's job ended without a report."""


class CredentialError(AbadgesError):
    """Raised when an Open Badges credential cannot be issued (no such award, or one no
    longer held) or does not verify: the message says which check failed, the signature, a
    date or the revocation status."""


class SchemaError(ConfigurationError):
    """Raised when the database lacks abadges' tables: run `await badges.migrate()` or
    `abadges db upgrade`. The message names the table and the database."""


def is_transient(exc: BaseException) -> bool:
    """Is `exc` connection trouble that may pass, so that trying again later makes sense?

    True for `QueueUnavailableError`, for refused, reset and timed-out connections to the
    database or Redis, SQLite's "database is locked", and the driver errors of a server that
    is restarting or out of connections. The worker retries jobs on these; an app retries a
    call on them, with the same `event_key` (see awarding.md). A `BadgeErrorGroup` is
    transient when every error in it is.
    """
    if isinstance(exc, BadgeErrorGroup):
        return all(is_transient(error) for error in exc.exceptions)
    return isinstance(exc, _transient_errors())


@functools.cache
def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        QueueUnavailableError,
        OSError,  # Refused, reset and timed-out connections.
        RedisConnectionError,
        RedisTimeoutError,
        sqlite3.OperationalError,  # "database is locked"
    ]
    # The drivers are optional: only those installed can have raised.
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - asyncpg is installed with the tests
        pass
    else:
        errors += [
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,  # "connection is closed"
            # "cannot switch to state 12; another operation (2) is in progress": a query sent
            # while the server's "terminating connection" message is arriving, before asyncpg
            # marks the connection closed (seen under pg_terminate_backend in tests/faults).
            asyncpg.exceptions.InternalClientError,
            asyncpg.exceptions.OperatorInterventionError,  # server shutting down or restarting
            asyncpg.exceptions.InsufficientResourcesError,  # too many connections
            asyncpg.exceptions.DeadlockDetectedError,  # a victim, after its retries
        ]
    try:
        import asyncmy.errors
    except ImportError:  # pragma: no cover - asyncmy is installed with the tests
        pass
    else:
        errors.append(asyncmy.errors.OperationalError)
    return tuple(errors)
