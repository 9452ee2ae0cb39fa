"""Deferred badges for the tests, and for the worker processes they start.

Tests register them on registries of their own; worker processes get them through
`deferred_worker`. Processes share state through files in `$ABADGES_TEST_STATE_DIR`: a user's
visits, and a log of every `on_award` call with the process that made it.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
from typing import Any

import anyio
import anyio.lowlevel

from abadges import Badge, BadgeAwarded


class User:
    """A user loaded by `load_user`, with the days it visited."""

    def __init__(self, id: str, visits: list[datetime.date]) -> None:
        self.id = id
        self.visits = visits


def state_dir() -> pathlib.Path:
    return pathlib.Path(os.environ["ABADGES_TEST_STATE_DIR"])


def today() -> datetime.date:
    """The day it is for this process: `$ABADGES_TEST_TODAY`, so app and worker can differ."""
    return datetime.date.fromisoformat(os.environ["ABADGES_TEST_TODAY"])


def record_visit(user_id: str, day: datetime.date) -> None:
    path = state_dir() / f"visits-{user_id}.json"
    visits = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*visits, day.isoformat()]))


async def load_user(user_id: str) -> User:
    """The user loader of the worker (`ABADGES_USER_LOADER=deferred_badges:load_user`)."""
    await anyio.lowlevel.checkpoint()
    path = state_dir() / f"visits-{user_id}.json"
    days = json.loads(path.read_text()) if path.exists() else []
    return User(user_id, [datetime.date.fromisoformat(day) for day in days])


class AddictBadge(Badge):
    """brabeion's AddictBadge: a visit on each of the last seven days, as of the visit."""

    slug = "addict"
    levels = ["Addict"]
    events = ["visited"]
    deferred = True

    async def freeze(self, **state: Any) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return {**state, "day": today().isoformat()}

    def award(self, **state: Any) -> BadgeAwarded | None:
        end = datetime.date.fromisoformat(state["day"])
        week = {end - datetime.timedelta(days=n) for n in range(7)}
        return BadgeAwarded() if week <= set(state["user"].visits) else None


class VisitorBadge(Badge):
    """Given on every visit."""

    slug = "visitor"
    levels = ["Visitor"]
    events = ["visited"]
    multiple = True
    deferred = True

    async def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class RegularBadge(Badge):
    """Levels by number of visits."""

    slug = "regular"
    levels = ["Newcomer", "Regular", "Fixture"]
    events = ["visited"]
    deferred = True

    def award(self, **state: Any) -> BadgeAwarded:
        visits = len(state["user"].visits)
        return BadgeAwarded(level=3 if visits >= 10 else 2 if visits >= 5 else 1)


class ActiveBadge(Badge):
    """Temporary, each level replacing the one below: visits in the week before the event's
    day, as of the worker's run (2 for "Active", 5 for "Very active")."""

    slug = "active"
    levels = ["Active", "Very active"]
    events = ["active"]
    deferred = True
    temporary = True
    replaces_lower = True

    def freeze(self, **state: Any) -> dict[str, Any]:
        return {"day": today().isoformat()}

    def award(self, **state: Any) -> BadgeAwarded | None:
        end = datetime.date.fromisoformat(state["day"])
        week = {end - datetime.timedelta(days=n) for n in range(7)}
        visits = len(week & set(state["user"].visits))
        return (
            BadgeAwarded(level=2) if visits >= 5 else BadgeAwarded(level=1) if visits >= 2 else None
        )


class WeeklyBadge(Badge):
    """Held for a week: what the worker's periodic job expires."""

    slug = "weekly"
    levels = ["This week"]
    events = ["checked-in"]
    expires_after = datetime.timedelta(days=7)

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()
