"""The example site's badges: brabeion's points and addict badges, a `multiple` one, and one
that expires.

The apps import this module; the worker imports it through `ABADGES_BADGES=examples.badges`.
"""

from __future__ import annotations

import datetime
from typing import Any

from abadges import badges
from abadges.base import Badge, BadgeAwarded, BadgeDetail

from . import store


@badges.register
class PointsBadge(Badge):
    """Three ranks by points, evaluated in the request."""

    slug = "points"
    levels = [
        BadgeDetail("Bronze", "Over 5,000 points"),
        BadgeDetail("Silver", "Over 7,500 points"),
        BadgeDetail("Gold", "Over 10,000 points"),
    ]
    events = ["points_awarded"]
    multiple = False

    def award(self, **state: Any) -> BadgeAwarded | None:
        points = state["user"].points
        if points > 10000:
            return BadgeAwarded(level=3)
        if points > 7500:
            return BadgeAwarded(level=2)
        if points > 5000:
            return BadgeAwarded(level=1)
        return None


@badges.register
class WindfallBadge(Badge):
    """Earned again each time a user gets 1,000 points or more at once."""

    slug = "windfall"
    levels = [BadgeDetail("Windfall", "1,000 points or more at once")]
    events = ["points_awarded"]
    multiple = True

    def award(self, **state: Any) -> BadgeAwarded | None:
        return BadgeAwarded() if state["added"] >= 1000 else None


@badges.register
class AddictBadge(Badge):
    """Visited every day for a month: a query too slow for the request, so the worker runs it."""

    slug = "addict"
    levels = [BadgeDetail("Addict", "Visited every day for 30 days")]
    events = ["visited"]
    deferred = True
    days = 30

    def freeze(self, **state: Any) -> dict[str, Any]:
        # The worker may run this after midnight: the day of the visit travels with the job.
        return {"current_day": state["day"].isoformat()}

    async def award(self, **state: Any) -> BadgeAwarded | None:
        last = datetime.date.fromisoformat(state["current_day"])
        first = last - datetime.timedelta(days=self.days - 1)
        visited = await store.visit_days(state["user"].id, first, last)
        return BadgeAwarded() if len(visited) == self.days else None


@badges.register
class WeeklyBadge(Badge):
    """Held for a week from the visit that earned it: the worker's periodic job moves it to the
    history as "expired", and the user's next visit earns it again."""

    slug = "weekly"
    levels = [BadgeDetail("This week", "Visited in the last 7 days")]
    events = ["visited"]
    expires_after = datetime.timedelta(days=7)

    def award(self, **state: Any) -> BadgeAwarded | None:
        # Dated when it is recorded, whatever the visit's day: a held award is not recorded
        # again, so only a visit after it expired earns it anew.
        return BadgeAwarded()
