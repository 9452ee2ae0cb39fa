"""Badge definitions: `Badge`, `BadgeAwarded` and `BadgeDetail`, at brabeion's import path."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Awaitable, Sequence
from typing import Any

from ._utils import storable
from .exceptions import (
    BadgeDefinitionError,
    InvalidAwardError,
    InvalidLevelError,
    InvalidStateError,
)

__all__ = ["Badge", "BadgeAwarded", "BadgeDetail", "Progress"]

#: Longest slug the awards table can hold.
MAX_SLUG_LENGTH = 100
#: Most levels a badge may have: the awards table stores a level in a SMALLINT.
MAX_LEVELS = 32_767


@dataclasses.dataclass(frozen=True)
class BadgeDetail:
    """One level of a badge: its name, and optionally a description, an image (a URL or a
    path, the badge's `image` when None) and the points it is worth on leaderboards."""

    name: str
    description: str | None = None
    image: str | None = None
    points: int = 1


@dataclasses.dataclass(frozen=True)
class Progress:
    """What `Badge.progress()` returns: how far a user is (`current`) toward the next level
    not held (`target`), in the badge's own unit (points, visits, days)."""

    current: float
    target: float


@dataclasses.dataclass(frozen=True)
class BadgeAwarded:
    """What `Badge.award()` returns when the user has earned the badge.

    `level` is 1-indexed and may be left out when the badge has a single level.
    """

    level: int | None = None


class Badge:
    """Base class of every badge.

    Subclasses set `slug`, `levels` and `events`, optionally `multiple` and `deferred`, and
    define `award(**state)`, a plain method or a coroutine. On an instance, `levels` is a tuple
    of `BadgeDetail`; the class attribute is left as written.
    """

    slug: str
    levels: Sequence[str | BadgeDetail]
    events: Sequence[str]
    #: May the same user hold this badge more than once? Only for single-level badges.
    multiple: bool = False
    #: Evaluate `award()` outside the request, in a worker, with the state `freeze()` returns.
    deferred: bool = False
    #: Revoke, whenever the badge's events are evaluated, the levels held above what
    #: `award()` now gives (all of them when it gives None). Not with `multiple`.
    temporary: bool = False
    #: How long each award is held, from its `awarded_at`; None: for good.
    expires_after: datetime.timedelta | None = None
    #: Holding a level removes the lower ones ("replaced"); False keeps them, as brabeion does.
    replaces_lower: bool = False
    #: The picture of the badge (a URL or a path), for levels without an image of their own.
    image: str | None = None
    #: A heading to list the badge under on pages ("Participation", "Moderation").
    group: str | None = None
    #: Not to be listed to a user who does not hold it (a surprise); pages check it.
    hidden: bool = False

    def __init__(self) -> None:
        self.levels = tuple(
            level if isinstance(level, BadgeDetail) else BadgeDetail(level)
            for level in type(self).levels
        )

    def award(self, **state: Any) -> BadgeAwarded | Awaitable[BadgeAwarded | None] | None:
        """Decide whether the user in `state["user"]` has earned this badge, and at which level."""
        raise NotImplementedError  # pragma: no cover - register() refuses classes without it

    def freeze(self, **state: Any) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Capture, at event time, the state a deferred `award()` will be given later."""
        return state

    def progress(self, **state: Any) -> Progress | Awaitable[Progress | None] | None:
        """How far the user in `state["user"]` is toward the next level not held, or None;
        optional: `progress_for()` skips the badges that do not define it."""
        return None

    @property
    def has_progress(self) -> bool:
        """Does this badge define `progress()`?"""
        return type(self).progress is not Badge.progress

    def image_of(self, level: int) -> str | None:
        """The image of a 1-indexed level: its own, else the badge's."""
        image = self.detail(level).image
        return self.image if image is None else image

    def points_of(self, level: int) -> int:
        """The points of a 1-indexed level."""
        return self.detail(level).points

    def detail(self, level: int) -> BadgeDetail:
        """The `BadgeDetail` of a 1-indexed level."""
        self.check_level(level)
        detail = self.levels[level - 1]
        assert isinstance(detail, BadgeDetail)
        return detail

    def check_level(self, level: object) -> int:
        """Return `level` if it is a level of this badge; raise `InvalidLevelError` otherwise."""
        if not self._is_level(level):
            raise InvalidLevelError(
                f"Badge {self.slug!r} has {len(self.levels)} level(s); "
                f"level {level!r} is out of range."
            )
        assert isinstance(level, int)
        return level

    def level_awarded(self, result: object) -> int | None:
        """The level a result of `award()` grants, or None when it grants nothing.

        Raises `InvalidAwardError` or `InvalidLevelError` when the result cannot be recorded.
        """
        if result is None:
            return None
        if not isinstance(result, BadgeAwarded):
            raise InvalidAwardError(
                f"Badge {self.slug!r} award() returned {result!r}; expected a BadgeAwarded or None."
            )
        level = result.level
        if level is None and len(self.levels) == 1:
            return 1
        if level is None:
            raise InvalidLevelError(
                f"Badge {self.slug!r} has {len(self.levels)} levels; "
                "award() returned BadgeAwarded() without a level."
            )
        if not self._is_level(level):
            raise InvalidLevelError(
                f"Badge {self.slug!r} has {len(self.levels)} level(s); "
                f"BadgeAwarded(level={level!r}) is out of range."
            )
        return level

    def expires_at(self, awarded_at: datetime.datetime) -> datetime.datetime | None:
        """When an award made at `awarded_at` stops being held: None when it does not expire.

        Raises `InvalidStateError` when that is past the year 9999."""
        if self.expires_after is None:
            return None
        try:
            return awarded_at + self.expires_after
        except OverflowError:
            raise InvalidStateError(
                f"Badge {self.slug!r} expires {self.expires_after} after it is awarded; "
                f"awarded at {awarded_at.isoformat()}, it would expire after the year 9999."
            ) from None

    @property
    def settles(self) -> bool:
        """Does recording a level of this badge change the other levels the user holds?"""
        return self.temporary or self.replaces_lower

    def _is_level(self, level: object) -> bool:
        return (
            isinstance(level, int)
            and not isinstance(level, bool)
            and 1 <= level <= len(self.levels)
        )


def check_definition(cls: object) -> None:
    """Raise `BadgeDefinitionError` naming the class and the attribute if `cls` is no usable
    badge."""
    if not (isinstance(cls, type) and issubclass(cls, Badge)):
        raise BadgeDefinitionError(f"register() takes a Badge subclass; got {cls!r}.")
    name = cls.__qualname__
    for old, whose in (("async", "brabeion's"), ("async_", "pinax-badges'")):
        if hasattr(cls, old):
            raise BadgeDefinitionError(
                f"{name} sets {old!r}, {whose} flag for deferred badges; rename it to 'deferred'."
            )
    for attribute in ("slug", "levels", "events"):
        if not hasattr(cls, attribute):
            raise BadgeDefinitionError(f"{name} has no {attribute!r} attribute.")
    slug = cls.slug
    if not isinstance(slug, str) or not slug.strip():
        raise BadgeDefinitionError(f"{name}.slug must be a non-empty string; got {slug!r}.")
    if not storable(slug):
        raise BadgeDefinitionError(
            f"{name}.slug {slug[:80]!r} holds a NUL or a lone surrogate, which databases cannot "
            "store."
        )
    if len(slug) > MAX_SLUG_LENGTH:
        raise BadgeDefinitionError(
            f"{name}.slug is {len(slug)} characters long; the limit is {MAX_SLUG_LENGTH}."
        )
    _check_list(name, "levels", cls.levels, (str, BadgeDetail))
    if len(cls.levels) > MAX_LEVELS:
        raise BadgeDefinitionError(
            f"{name}.levels has {len(cls.levels)} levels; the limit is {MAX_LEVELS}."
        )
    for position, level in enumerate(cls.levels, start=1):
        if isinstance(level, BadgeDetail):
            _check_detail(name, position, level)
    _check_list(name, "events", cls.events, (str,))
    for attribute in ("image", "group"):
        value = getattr(cls, attribute)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise BadgeDefinitionError(
                f"{name}.{attribute} must be None or a non-empty string; got {value!r}."
            )
    for attribute in ("multiple", "deferred", "temporary", "replaces_lower", "hidden"):
        value = getattr(cls, attribute)
        if not isinstance(value, bool):
            raise BadgeDefinitionError(f"{name}.{attribute} must be True or False; got {value!r}.")
    if cls.multiple and len(cls.levels) > 1:
        raise BadgeDefinitionError(
            f"{name} sets multiple = True with {len(cls.levels)} levels; "
            "a badge awarded more than once must have a single level."
        )
    for attribute in ("temporary", "replaces_lower"):
        if cls.multiple and getattr(cls, attribute):
            raise BadgeDefinitionError(
                f"{name} sets both multiple = True and {attribute} = True; {attribute} changes "
                "which levels a user holds, and a badge awarded more than once has one level, "
                "held many times."
            )
    expires_after = cls.expires_after
    if expires_after is not None and not (
        isinstance(expires_after, datetime.timedelta) and expires_after > datetime.timedelta(0)
    ):
        raise BadgeDefinitionError(
            f"{name}.expires_after must be None or a positive datetime.timedelta; "
            f"got {expires_after!r}."
        )
    if cls.award is Badge.award:
        raise BadgeDefinitionError(f"{name} does not define award(self, **state).")


def _check_detail(name: str, position: int, detail: BadgeDetail) -> None:
    points, image = detail.points, detail.image
    if not isinstance(points, int) or isinstance(points, bool) or points < 0:
        raise BadgeDefinitionError(
            f"{name}.levels[{position - 1}] ({detail.name!r}) has points={points!r}; points "
            "must be a whole number, 0 or more."
        )
    if image is not None and not (isinstance(image, str) and image.strip()):
        raise BadgeDefinitionError(
            f"{name}.levels[{position - 1}] ({detail.name!r}) has image={image!r}; an image "
            "must be None or a non-empty string."
        )


def _check_list(name: str, attribute: str, value: object, kinds: tuple[type, ...]) -> None:
    expected = " or ".join(kind.__name__ for kind in kinds)
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise BadgeDefinitionError(
            f"{name}.{attribute} must be a non-empty list of {expected}; got {value!r}."
        )
    for item in value:
        if not isinstance(item, kinds) or (isinstance(item, str) and not item):
            raise BadgeDefinitionError(
                f"{name}.{attribute} must hold non-empty {expected} items; got {item!r}."
            )
