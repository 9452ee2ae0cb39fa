"""Badges the storage and migration tests award: levels from the state, and a multiple one."""

from __future__ import annotations

from typing import Any

from abadges import Badge, BadgeAwarded, BadgeDetail


class RankBadge(Badge):
    """Awards the level given in the event's state."""

    slug = "rank"
    levels = ["Bronze", "Silver", BadgeDetail("Gold", "The best")]
    events = ["ranked"]

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded(level=state["level"])


class ThanksBadge(Badge):
    slug = "thanks"
    levels = ["Thanked"]
    events = ["thanked"]
    multiple = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class LadderBadge(Badge):
    """Each level replaces the ones below it."""

    slug = "ladder"
    levels = ["One", "Two", "Three"]
    events = ["climbed"]
    replaces_lower = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded(level=state["level"])
