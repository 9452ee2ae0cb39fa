"""abadges: an async-native badge engine for asyncio web apps, in the model of brabeion."""

from __future__ import annotations

from .base import Badge, BadgeAwarded, BadgeDetail
from .config import Settings
from .exceptions import (
    AbadgesError,
    BadgeAlreadyRegisteredError,
    BadgeDefinitionError,
    BadgeNotRegisteredError,
    ConfigurationError,
    InvalidAwardError,
    InvalidJobError,
    InvalidLevelError,
    InvalidStateError,
    NotConnectedError,
    QueueUnavailableError,
    SchemaError,
)
from .registry import BadgeRegistry
from .storage import Award, MigrationStatus
from .users import UserRef

__version__ = "0.1.0"

#: The default registry: register badges with it and award through it.
badges = BadgeRegistry()

__all__ = [
    "AbadgesError",
    "Award",
    "Badge",
    "BadgeAlreadyRegisteredError",
    "BadgeAwarded",
    "BadgeDefinitionError",
    "BadgeDetail",
    "BadgeNotRegisteredError",
    "BadgeRegistry",
    "ConfigurationError",
    "InvalidAwardError",
    "InvalidJobError",
    "InvalidLevelError",
    "InvalidStateError",
    "MigrationStatus",
    "NotConnectedError",
    "QueueUnavailableError",
    "SchemaError",
    "Settings",
    "UserRef",
    "__version__",
    "badges",
]
