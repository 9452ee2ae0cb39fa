"""A process of tests/test_backfill_processes.py: `python backfill_child.py DATABASE_URL USERS
CHECKPOINT` backfills `backfill_badges`' badges for USERS users (u0000, u0001, ...) under the
checkpoint CHECKPOINT, in batches of 10, two at a time, and prints the report as JSON.
`$ABADGES_TEST_BACKFILL_DELAY` slows it down (see `backfill_badges`)."""

from __future__ import annotations

import json
import sys

import anyio

from abadges import BadgeRegistry
from tests.support.backfill_badges import BADGES, user_ids

BATCH_SIZE = 10
CONCURRENCY = 2


async def main(database_url: str, count: int, checkpoint: str) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, queue="inline")
    for badge_class in BADGES:
        registry.register(badge_class)
    async with registry.lifespan():
        report = await registry.backfill(
            iter(user_ids(count)),
            checkpoint=checkpoint,
            batch_size=BATCH_SIZE,
            concurrency=CONCURRENCY,
        )
    print(json.dumps(report.to_dict()), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
