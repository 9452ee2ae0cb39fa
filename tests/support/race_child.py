"""One of the processes of test_race.py: connect, say "ready", wait for "go" on stdin, then make
CALLS concurrent `possibly_award_badge` calls for one user and print the ids they recorded.
With "revoke" as a third argument, every third call revokes its level instead, and the output
is {"recorded": ids, "revoked": how many}."""

from __future__ import annotations

import json
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


async def main(database_url: str, calls: int, mode: str) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url)
    registry.register(RaceBadge)
    recorded: list[int] = []
    revoked: list[int] = []

    async def call(n: int) -> None:
        level = n % 3 + 1
        if mode == "revoke" and n % 3 == 2:
            revoked.append(await registry.revoke("racer", "race", level % 3 + 1, by=f"r{n}"))
            return
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
    print(json.dumps(output), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "award")
