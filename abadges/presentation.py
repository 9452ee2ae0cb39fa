"""What pages show of badges: progress toward the next level, how rare each level is, and the
checks of the leaderboards' arguments. `BadgeRegistry` calls these; the queries are in
`abadges.storage.totals`."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

from ._utils import maybe_await, shorten
from .awards import Award
from .base import Badge, Progress
from .exceptions import InvalidAwardError
from .standings import BadgeProgress, BadgeStats, RankBy
from .storage.totals import Totals


async def progress_for(
    badges: Iterable[Badge], held: Sequence[Award], state: Mapping[str, Any]
) -> dict[str, BadgeProgress]:
    """The progress of each of `badges` that defines `progress()` and gives one, for the user
    of `state`, who holds `held`."""
    top: dict[str, int] = {}
    for award in held:
        top[award.slug] = max(award.level, top.get(award.slug, 0))
    found: dict[str, BadgeProgress] = {}
    for badge in badges:
        if not badge.has_progress:
            continue
        try:
            result = await maybe_await(badge.progress(**state))
        except Exception as exc:
            exc.add_note(f"Raised by the progress() of badge {badge.slug!r}.")
            raise
        if result is None:
            continue
        current, target = _checked(badge, result)
        level = top.get(badge.slug, 0)
        if badge.multiple:
            next_level: int | None = 1
        else:
            next_level = level + 1 if level < len(badge.levels) else None
        fraction = 1.0 if target <= 0 else min(max(current / target, 0.0), 1.0)
        found[badge.slug] = BadgeProgress(badge.slug, level, next_level, current, target, fraction)
    return found


def _checked(badge: Badge, result: object) -> tuple[float, float]:
    if not isinstance(result, Progress):
        raise InvalidAwardError(
            f"Badge {badge.slug!r} progress() returned {shorten(result)}; expected a Progress "
            "or None."
        )
    for name in ("current", "target"):
        value = getattr(result, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidAwardError(
                f"Badge {badge.slug!r} progress() returned {name}={shorten(value)}; expected "
                "a finite number."
            )
    return result.current, result.target


async def stats(
    badges: Mapping[str, Badge], totals: Totals, total_users: int | None
) -> list[BadgeStats]:
    """A `BadgeStats` for each level of `badges`, in their order."""
    levels = [
        (slug, level) for slug, badge in badges.items() for level in range(1, len(badge.levels) + 1)
    ]
    multiple = [slug for slug, badge in badges.items() if badge.multiple]
    awarded, holders, dates = await totals.stats(levels, [None, *multiple])
    everyone = holders[None] if total_users is None else total_users
    found = []
    for slug, level in levels:
        # A badge held once has one row per holder and level; a multiple one, rows per award.
        count = holders[slug] if slug in multiple else awarded.get((slug, level), 0)
        first, latest = dates[slug, level]
        share = count / everyone if everyone else 0.0
        name = badges[slug].detail(level).name
        found.append(BadgeStats(slug, level, name, count, share, first, latest))
    return found


def check_rank_by(call: str, by: object) -> RankBy:
    if by not in get_args(RankBy):
        raise ValueError(f'{call}() by must be "points" or "awards"; got {shorten(by)}.')
    return by  # type: ignore[return-value]


def check_since(call: str, since: object) -> datetime.datetime | None:
    if since is None:
        return None
    if not isinstance(since, datetime.datetime) or since.utcoffset() is None:
        raise ValueError(
            f"{call}() since must be None or a timezone-aware datetime; got {shorten(since)}."
        )
    return since


def check_total_users(total_users: object) -> int | None:
    if total_users is None:
        return None
    if isinstance(total_users, bool) or not isinstance(total_users, int) or total_users < 0:
        raise ValueError(
            f"stats() total_users must be None or a whole number, 0 or more; got "
            f"{shorten(total_users)}."
        )
    return total_users
