"""One of the processes of test_race.py: connect, say "ready", wait for "go" on stdin, then make
CALLS concurrent calls for one user and print what they did. The third argument is the mode:

- "award": `possibly_award_badge` of the level n % 3 + 1 of RaceBadge; prints the ids recorded;
- "revoke": the same, but every third call revokes a level instead; prints {"recorded": ids,
  "revoked": how many};
- "settle": RankNowBadge (temporary, replaces_lower) at the level n % 4 (0: none);
- "climb": LadderBadge (replaces_lower) at the level n % 3 + 1;
- "expire": FleetingBadge (expires 0.2 s after its award), every other call `expire_awards()`,
  each call after a random pause of up to 1 s; prints {"recorded": ids, "expired": how many}.
"""

from __future__ import annotations

import datetime
import json
import random
import sys
from typing import Any

import anyio

from abadges import Badge, BadgeAwarded, BadgeRegistry


class RaceBadge(Badge):
    slug = "race"
    levels = ["One", "Two", "Three"]
    events = ["raced"]

    async def award(self, **state: Any) -> BadgeAwarded:
        await anyio.lowlevel.checkpoint()
        return BadgeAwarded(level=state["level"])


class RankNowBadge(Badge):
    """The user holds exactly the level award() gives now, or none."""

    slug = "rank-now"
    levels = ["Low", "Mid", "High"]
    events = ["ranked-now"]
    temporary = True
    replaces_lower = True

    async def award(self, **state: Any) -> BadgeAwarded | None:
        await anyio.lowlevel.checkpoint()
        return BadgeAwarded(level=state["level"]) if state["level"] else None


class LadderBadge(Badge):
    slug = "ladder"
    levels = ["Rung 1", "Rung 2", "Rung 3"]
    events = ["climbed"]
    replaces_lower = True

    async def award(self, **state: Any) -> BadgeAwarded:
        await anyio.lowlevel.checkpoint()
        return BadgeAwarded(level=state["level"])


class FleetingBadge(Badge):
    slug = "fleeting"
    levels = ["Fleeting"]
    events = ["flashed"]
    expires_after = datetime.timedelta(seconds=0.2)

    async def award(self, **state: Any) -> BadgeAwarded:
        await anyio.lowlevel.checkpoint()
        return BadgeAwarded()


EVENTS = {"settle": ("ranked-now", 4, 0), "climb": ("climbed", 3, 1)}


async def main(database_url: str, calls: int, mode: str) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url)
    for badge in (RaceBadge, RankNowBadge, LadderBadge, FleetingBadge):
        registry.register(badge)
    recorded: list[int] = []
    revoked: list[int] = []

    async def call(n: int) -> None:
        level = n % 3 + 1
        if mode == "revoke" and n % 3 == 2:
            revoked.append(await registry.revoke("racer", "race", level % 3 + 1, by=f"r{n}"))
            return
        if mode == "expire":
            await anyio.sleep(random.random())
            if n % 2:
                revoked.append(await registry.expire_awards())
                return
            awards = await registry.possibly_award_badge("flashed", user="racer")
        elif mode in EVENTS:
            event, levels, first = EVENTS[mode]
            awards = await registry.possibly_award_badge(
                event, user="racer", level=n % levels + first
            )
        else:
            awards = await registry.possibly_award_badge("raced", user="racer", level=level)
        recorded.extend(award.id for award in awards)

    async with registry.lifespan():
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        async with anyio.create_task_group() as tg:
            for n in range(calls):
                tg.start_soon(call, n)
    output: object = recorded
    if mode == "revoke":
        output = {"recorded": recorded, "revoked": sum(revoked)}
    if mode == "expire":
        output = {"recorded": recorded, "expired": sum(revoked)}
    print(json.dumps(output), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "award")
