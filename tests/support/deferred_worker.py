"""The badge module of the tests' worker processes (`ABADGES_BADGES=deferred_worker`, with
`tests/` on `PYTHONPATH`): `deferred_badges`' badges and an announcement log, registered on the
default registry. Only worker processes import it, so the test process's default registry stays
free for the example apps."""

from __future__ import annotations

import os

import anyio

from abadges import Award, badges
from abadges.worker import worker_settings
from tests.support.deferred_badges import (
    ActiveBadge,
    AddictBadge,
    RegularBadge,
    VisitorBadge,
    WeeklyBadge,
    state_dir,
)


@badges.on_award
async def log_award(award: Award) -> None:
    """Log each announcement; hang on the first one for `$ABADGES_TEST_HANG_USER`, so a test
    can kill the worker between recording and announcing."""
    with (state_dir() / "announced.log").open("a") as log:
        log.write(f"{award.user_id} {award.slug} {award.level} {os.getpid()}\n")
    marker = state_dir() / "hung"
    if award.user_id == os.environ.get("ABADGES_TEST_HANG_USER") and not marker.exists():
        marker.touch()
        await anyio.sleep_forever()


@badges.on_revoke
def log_revoke(award: Award) -> None:
    """Log each award that stops being held, as `on_award`'s are, marked "ended"."""
    with (state_dir() / "announced.log").open("a") as log:
        log.write(f"ended {award.user_id} {award.slug} {award.level} {os.getpid()}\n")


for badge_class in (AddictBadge, VisitorBadge, RegularBadge, ActiveBadge, WeeklyBadge):
    badges.register(badge_class)

#: A worker whose killed jobs run again 12 seconds later (job timeout + 10 s).
QuickRetrySettings = worker_settings(job_timeout=2, poll_delay=0.05)

#: A worker that refreshes its health key twice a second, so that it lapses 1.5 s after death.
QuickHealthSettings = worker_settings(health_interval=0.5)
