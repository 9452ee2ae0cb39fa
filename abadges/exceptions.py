"""
Every error abadges raises on purpose derives from `AbadgesError`:

    AbadgesError
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
    └── InvalidJobError

Exceptions raised by a badge's own `award()` or `freeze()` are not wrapped: they propagate
as they are, with a note naming the badge and the event.
"""

from __future__ import annotations

__all__ = [
    "AbadgesError",
    "BadgeAlreadyRegisteredError",
    "BadgeDefinitionError",
    "BadgeNotRegisteredError",
    "ConfigurationError",
    "InvalidAwardError",
    "InvalidJobError",
    "InvalidLevelError",
    "InvalidStateError",
    "NotConnectedError",
    "QueueUnavailableError",
    "SchemaError",
]


class AbadgesError(Exception):
    """Base class of every error abadges raises on purpose."""


class ConfigurationError(AbadgesError):
    """Raised when a setting cannot work: an unsupported database URL, a missing driver,
    or `configure()` called while connected."""


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
    `None`. Nothing is recorded for that badge."""


class InvalidLevelError(AbadgesError):
    """Raised when a level is outside `1..len(levels)`, or missing from the `BadgeAwarded`
    of a badge with several levels. Nothing is recorded for that badge."""


class QueueUnavailableError(AbadgesError):
    """Raised when Redis does not take a deferred badge's job within about a second. The
    event's inline badges are recorded all the same; nothing of its deferred badges is."""


class InvalidJobError(AbadgesError):
    """Raised in the worker when a queued payload is not an abadges job it can run (not JSON,
    another payload version, a missing or mistyped field). Nothing of it is executed."""


class SchemaError(ConfigurationError):
    """Raised when the database lacks abadges' tables: run `await badges.migrate()` or
    `abadges db upgrade`. The message names the table and the database."""
