"""The load of the fault runs: a seeded stream of events, its badges, the reference computation
of what the awards table must hold after it, and the app process that fires it.

Run as a script, it is one app process: `python load.py <shard> <shards>` fires the events
whose index modulo `shards` is `shard`, with `$LOAD_CONCURRENCY` concurrent callers, against
the `ABADGES_*` settings, and prints a JSON summary line. A call that fails on connection
trouble (or `QueueUnavailableError`) is retried with the same `event_key`, as the docs tell
users to do, for up to `$LOAD_PATIENCE` seconds per event.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio

from abadges import Badge, BadgeAwarded, BadgeRegistry, is_transient

USERS = 30
SCORE_LEVELS = (300, 800, 1500)
STREAK_LEVELS = (10, 25)

Held = collections.Counter[tuple[str, str, int]]


@dataclasses.dataclass(frozen=True)
class Event:
    """One event of the stream, with the user's running totals after it."""

    index: int
    name: str
    user: str
    amount: int
    total: int  # The user's points after the event (scored events add their amount).
    count: int  # How many events the user has had, this one included.

    def state(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "amount": self.amount,
            "total": self.total,
            "count": self.count,
            "event_key": str(self.index),
        }


def stream(seed: int, events: int) -> list[Event]:
    rng = random.Random(seed)
    totals: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    result = []
    for index in range(events):
        user, name = f"u{rng.randrange(USERS)}", rng.choice(["scored", "visited"])
        amount = rng.randint(0, 100)
        counts[user] += 1
        if name == "scored":
            totals[user] += amount
        result.append(Event(index, name, user, amount, totals[user], counts[user]))
    return result


def level_for(value: int, thresholds: tuple[int, ...]) -> int | None:
    """The highest level whose threshold `value` is above; None below the first."""
    reached = [level for level, floor in enumerate(thresholds, 1) if value > floor]
    return reached[-1] if reached else None


def reference(events: list[Event]) -> Held:
    """What the table must hold after `events`, computed without abadges: levels of the
    non-multiple badges once each, one award per qualifying event for the multiple ones."""
    once: set[tuple[str, str, int]] = set()
    many: Held = collections.Counter()
    for event in events:
        if event.name == "scored":
            if (level := level_for(event.total, SCORE_LEVELS)) is not None:
                once.add((event.user, "score", level))
            if event.amount >= 90:
                many[event.user, "jackpot", 1] += 1
        if (level := level_for(event.count, STREAK_LEVELS)) is not None:
            once.add((event.user, "streak", level))
        if event.name == "visited" and event.amount % 3 == 0:
            many[event.user, "regular", 1] += 1
    return many + collections.Counter(once)


# The badges: two inline and two deferred, multiple and not -------------------------------------


class ScoreBadge(Badge):
    slug = "score"
    levels = ["Bronze", "Silver", "Gold"]
    events = ["scored"]

    def award(self, **state: Any) -> BadgeAwarded | None:
        level = level_for(state["total"], SCORE_LEVELS)
        return None if level is None else BadgeAwarded(level=level)


class JackpotBadge(Badge):
    slug = "jackpot"
    levels = ["Jackpot"]
    events = ["scored"]
    multiple = True

    def award(self, **state: Any) -> BadgeAwarded | None:
        return BadgeAwarded() if state["amount"] >= 90 else None


class StreakBadge(Badge):
    slug = "streak"
    levels = ["Keen", "Devoted"]
    events = ["scored", "visited"]
    deferred = True

    def freeze(self, **state: Any) -> dict[str, Any]:
        return {"count": state["count"]}

    async def award(self, **state: Any) -> BadgeAwarded | None:
        level = level_for(state["count"], STREAK_LEVELS)
        return None if level is None else BadgeAwarded(level=level)


class RegularBadge(Badge):
    slug = "regular"
    levels = ["Regular"]
    events = ["visited"]
    multiple = True
    deferred = True

    def freeze(self, **state: Any) -> dict[str, Any]:
        return {"amount": state["amount"]}

    async def award(self, **state: Any) -> BadgeAwarded | None:
        return BadgeAwarded() if state["amount"] % 3 == 0 else None


BADGES: tuple[type[Badge], ...] = (ScoreBadge, JackpotBadge, StreakBadge, RegularBadge)


# The app process ------------------------------------------------------------------------------


async def deliver(registry: BadgeRegistry, event: Event, patience: float) -> int:
    """Fire `event` until it goes through; return how many tries failed first."""
    deadline = time.monotonic() + patience
    for failed in itertools.count():
        try:
            await registry.possibly_award_badge(event.name, **event.state())
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() > deadline:
                raise
            await anyio.sleep(min(0.05 * 2**failed, 1.0))
        else:
            return failed
    raise AssertionError("unreachable")  # pragma: no cover


async def fire(events: list[Event], concurrency: int, patience: float) -> dict[str, Any]:
    registry = BadgeRegistry()
    for badge_class in BADGES:
        registry.register(badge_class)
    retries = 0
    started = time.monotonic()
    pending: Iterator[Event] = iter(events)

    async def caller() -> None:
        nonlocal retries
        for event in pending:  # Shared by the callers: each event is taken once.
            retries += await deliver(registry, event, patience)

    # An app that starts while the database is down (a fault that struck before this process
    # was up) waits for it, as a supervised app restarting would.
    deadline = time.monotonic() + patience
    while True:
        try:
            await registry.connect()
            break
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() > deadline:
                raise
            await anyio.sleep(0.2)
    async with registry.lifespan():
        async with anyio.create_task_group() as task_group:
            for _ in range(concurrency):
                task_group.start_soon(caller)
    return {"events": len(events), "retries": retries, "seconds": time.monotonic() - started}


def main() -> None:
    shard, shards = int(sys.argv[1]), int(sys.argv[2])
    events = stream(int(os.environ["LOAD_SEED"]), int(os.environ["LOAD_EVENTS"]))
    mine = [event for event in events if event.index % shards == shard]
    patience = float(os.environ.get("LOAD_PATIENCE", "60"))
    summary = anyio.run(fire, mine, int(os.environ.get("LOAD_CONCURRENCY", "8")), patience)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
