"""The example site's badges: brabeion's points and addict badges, a `multiple` one, and one
that expires.

Each has a picture in `examples/static/badges/`, a group to be listed under, and points for
the leaderboard; `points` and `addict` tell how far a user is (`progress()`), in their `unit`.
`windfall` is hidden, a surprise: the pages list it only to the users who hold it.

The apps import this module; the worker imports it through `ABADGES_BADGES=examples.badges`.
"""

from __future__ import annotations

import datetime
from typing import Any

from abadges import badges
from abadges.base import Badge, BadgeAwarded, BadgeDetail, Progress

from . import store


@badges.register
class PointsBadge(Badge):
    """Three ranks by points, evaluated in the request."""

    slug = "points"
    levels = [
        BadgeDetail("Bronze", "Over 5,000 points", points=10),
        BadgeDetail("Silver", "Over 7,500 points", points=25),
        BadgeDetail("Gold", "Over 10,000 points", points=50),
    ]
    events = ["points_awarded"]
    multiple = False
    image = "/static/badges/points.svg"
    group = "Points"
    unit = "points"
    #: The points each level needs more than.
    thresholds = (5000, 7500, 10000)

    def award(self, **state: Any) -> BadgeAwarded | None:
        points = state["user"].points
        passed = sum(points > threshold for threshold in self.thresholds)
        return BadgeAwarded(level=passed) if passed else None

    def progress(self, **state: Any) -> Progress | None:
        # Toward the first threshold not passed, shown as "4,000 / 5,000 points".
        points = state["user"].points
        for threshold in self.thresholds:
            if points <= threshold:
                return Progress(points, threshold)
        return None  # Past Gold's: nothing left.


@badges.register
class WindfallBadge(Badge):
    """Earned again each time a user gets 1,000 points or more at once."""

    slug = "windfall"
    levels = [BadgeDetail("Windfall", "1,000 points or more at once", points=5)]
    events = ["points_awarded"]
    multiple = True
    image = "/static/badges/windfall.svg"
    group = "Points"
    hidden = True

    def award(self, **state: Any) -> BadgeAwarded | None:
        return BadgeAwarded() if state["added"] >= 1000 else None


@badges.register
class AddictBadge(Badge):
    """Visited every day for a month: a query too slow for the request, so the worker runs it."""

    slug = "addict"
    levels = [BadgeDetail("Addict", "Visited every day for 30 days", points=30)]
    events = ["visited"]
    deferred = True
    image = "/static/badges/addict.svg"
    group = "Visits"
    unit = "days in a row"
    days = 30

    def freeze(self, **state: Any) -> dict[str, Any]:
        # The worker may run this after midnight: the day of the visit travels with the job.
        return {"current_day": state["day"].isoformat()}

    async def award(self, **state: Any) -> BadgeAwarded | None:
        last = datetime.date.fromisoformat(state["current_day"])
        first = last - datetime.timedelta(days=self.days - 1)
        visited = await store.visit_days(state["user"].id, first, last)
        return BadgeAwarded() if len(visited) == self.days else None

    async def progress(self, **state: Any) -> Progress:
        return Progress(await store.visit_streak(state["user"].id, self.days), self.days)


@badges.register
class WeeklyBadge(Badge):
    """Held for a week from the visit that earned it: the worker's periodic job moves it to the
    history as "expired", and the user's next visit earns it again."""

    slug = "weekly"
    levels = [BadgeDetail("This week", "Visited in the last 7 days", points=2)]
    events = ["visited"]
    expires_after = datetime.timedelta(days=7)
    image = "/static/badges/weekly.svg"
    group = "Visits"

    def award(self, **state: Any) -> BadgeAwarded | None:
        # Dated when it is recorded, whatever the visit's day: a held award is not recorded
        # again, so only a visit after it expired earns it anew.
        return BadgeAwarded()
