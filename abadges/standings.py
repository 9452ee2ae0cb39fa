"""What the presentation calls give: `Standing` (a leaderboard's row), `BadgeStats` (how many
hold a badge level, and how rare it is) and `BadgeProgress` (how far a user is toward a
badge's next level)."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Literal

#: What a leaderboard ranks by: the points of the levels held, or the number of awards.
RankBy = Literal["points", "awards"]


@dataclasses.dataclass(frozen=True)
class Standing:
    """A user's place on a leaderboard. `rank` is shared by ties (1, 2, 2, 4); `points` adds
    up the `BadgeDetail.points` of the awards held, and `awards` counts them (a `multiple`
    badge's each time)."""

    rank: int
    user_id: str
    points: int
    awards: int


@dataclasses.dataclass(frozen=True)
class BadgeStats:
    """How many users hold a badge level (`holders`), their `share` of the users holding any
    badge (or of `total_users`, when `stats()` is given it), and when the level was first and
    last awarded among the awards held (None when nobody holds it)."""

    slug: str
    level: int
    name: str
    holders: int
    share: float
    first_awarded_at: datetime.datetime | None
    latest_awarded_at: datetime.datetime | None


@dataclasses.dataclass(frozen=True)
class BadgeProgress:
    """How far a user is toward a badge's next level: `level` is the highest level held (0 for
    none), `next_level` the one after it (None when the top level is held; 1 for a `multiple`
    badge, earned again), `current` and `target` what `Badge.progress()` gave, `fraction`
    `current / target` within 0 and 1."""

    slug: str
    level: int
    next_level: int | None
    current: float
    target: float
    fraction: float
