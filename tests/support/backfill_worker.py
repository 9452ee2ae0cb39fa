"""The badge module of the backfill tests' worker and `abadges backfill` processes
(`ABADGES_BADGES=tests.support.backfill_worker`): `backfill_badges`' badges, registered on the
default registry, and an `on_award` callback that can hang.

With `$ABADGES_TEST_HANG_USER` set, the first announcement of that user's awards, in whatever
process, writes the process id to `$ABADGES_TEST_STATE_DIR/hung` and never returns: its batch's
awards are committed, and its report is never sent, so a test can kill the worker there."""

from __future__ import annotations

import os
import pathlib

import anyio

from abadges import Award, badges
from abadges.worker import worker_settings
from tests.support.backfill_badges import BADGES


@badges.on_award
async def hang_once(award: Award) -> None:
    if award.user_id != os.environ.get("ABADGES_TEST_HANG_USER"):
        return
    marker = pathlib.Path(os.environ["ABADGES_TEST_STATE_DIR"]) / "hung"
    try:
        with marker.open("x") as file:  # Once, whichever process gets here first.
            file.write(str(os.getpid()))
    except FileExistsError:
        return
    await anyio.sleep_forever()


for badge_class in BADGES:
    badges.register(badge_class)

#: A worker whose killed jobs run again 12 seconds after they started (job timeout + 10 s), and
#: whose jobs are cancelled after 2 seconds.
QuickRetrySettings = worker_settings(job_timeout=2, poll_delay=0.05)
