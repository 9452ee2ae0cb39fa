"""abadges: an async-native badge engine for asyncio web apps, in the model of brabeion."""

from __future__ import annotations

from .awards import Award, AwardChange
from .backfill import BackfillReport, BadgeCounts
from .base import Badge, BadgeAwarded, BadgeDetail, Progress
from .config import Settings
from .exceptions import (
    AbadgesError,
    BackfillJobError,
    BadgeAlreadyRegisteredError,
    BadgeDefinitionError,
    BadgeErrorGroup,
    BadgeNotRegisteredError,
    CheckpointError,
    ConfigurationError,
    CredentialError,
    InvalidAwardError,
    InvalidJobError,
    InvalidLevelError,
    InvalidStateError,
    NotConnectedError,
    QueueUnavailableError,
    SchemaError,
    is_transient,
)
from .notices import AwardNotice
from .registry import BadgeRegistry
from .standings import BadgeProgress, BadgeStats, Standing
from .storage.base import MigrationStatus
from .users import UserRef

__version__ = "0.1.0"

badges = BadgeRegistry()
"""The default registry: register badges with it and award through it."""

__all__ = [
    "AbadgesError",
    "Award",
    "AwardChange",
    "AwardNotice",
    "BackfillJobError",
    "BackfillReport",
    "Badge",
    "BadgeAlreadyRegisteredError",
    "BadgeAwarded",
    "BadgeCounts",
    "BadgeDefinitionError",
    "BadgeDetail",
    "BadgeErrorGroup",
    "BadgeNotRegisteredError",
    "BadgeProgress",
    "BadgeRegistry",
    "BadgeStats",
    "CheckpointError",
    "ConfigurationError",
    "CredentialError",
    "InvalidAwardError",
    "InvalidJobError",
    "InvalidLevelError",
    "InvalidStateError",
    "MigrationStatus",
    "NotConnectedError",
    "Progress",
    "QueueUnavailableError",
    "SchemaError",
    "Settings",
    "Standing",
    "UserRef",
    "__version__",
    "badges",
    "is_transient",
]
