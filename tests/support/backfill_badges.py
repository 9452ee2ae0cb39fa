"""Badges and users of the backfill tests that run real processes (test_backfill_processes.py).

The users are identities "u0000", "u0001", ...: `award()` gets a `UserRef`, and each badge
decides from the number in it, so that every process, and every run, gives the same awards:

- `member`: held once, by everyone;
- `tally`: `multiple`, for the even users (its awards have the backfill's key);
- `tier`: three levels, level n % 3 + 1; deferred, which a worker needs to start;
- `rank`: `replaces_lower`, levels 1 and 2 for n % 4 of 1 and 2 (settled one by one).

The environment tunes them for one process:

- `ABADGES_TEST_BACKFILL_DELAY`: seconds `member.award()` sleeps for each user (a slow run);
- `ABADGES_TEST_FAIL_USER`: `tier.award()` raises for this user;
- `ABADGES_TEST_STALL_USER`: `member.award()` never returns for this user;
- `ABADGES_TEST_USERS`: how many users `users()` gives (the CLI's `--users`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anyio

from abadges import Badge, BadgeAwarded


def number(state: dict[str, Any]) -> int:
    return int(state["user"].id.removeprefix("u"))


class MemberBadge(Badge):
    slug = "member"
    levels = ["Member"]
    events = ["backfilled"]

    async def award(self, **state: Any) -> BadgeAwarded:
        if state["user"].id == os.environ.get("ABADGES_TEST_STALL_USER"):
            await anyio.sleep_forever()
        await anyio.sleep(float(os.environ.get("ABADGES_TEST_BACKFILL_DELAY", "0")))
        return BadgeAwarded()


class TallyBadge(Badge):
    slug = "tally"
    levels = ["Tallied"]
    events = ["backfilled"]
    multiple = True

    def award(self, **state: Any) -> BadgeAwarded | None:
        return BadgeAwarded() if number(state) % 2 == 0 else None


class TierBadge(Badge):
    slug = "tier"
    levels = ["Bronze", "Silver", "Gold"]
    events = ["backfilled"]
    deferred = True

    def award(self, **state: Any) -> BadgeAwarded:
        if state["user"].id == os.environ.get("ABADGES_TEST_FAIL_USER"):
            raise RuntimeError("tier is out of order")
        return BadgeAwarded(level=number(state) % 3 + 1)


class RankBadge(Badge):
    slug = "rank"
    levels = ["Junior", "Senior"]
    events = ["backfilled"]
    replaces_lower = True

    def award(self, **state: Any) -> BadgeAwarded | None:
        level = number(state) % 4
        return BadgeAwarded(level=level) if level in (1, 2) else None


BADGES = (MemberBadge, TallyBadge, TierBadge, RankBadge)


def user_ids(count: int) -> list[str]:
    return [f"u{n:04d}" for n in range(count)]


def users() -> Iterator[str]:
    """The CLI's `--users`: `$ABADGES_TEST_USERS` users, streamed."""
    yield from user_ids(int(os.environ["ABADGES_TEST_USERS"]))


async def async_users() -> list[str]:
    """The same users from a coroutine function, which the CLI awaits."""
    await anyio.lowlevel.checkpoint()
    return user_ids(int(os.environ["ABADGES_TEST_USERS"]))


NOT_CALLABLE = "users"
