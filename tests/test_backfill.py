"""`backfill()` in this process: what it records, reports, revokes and announces, its dry
run, its checkpoints and its errors; on every database."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from abadges import (
    Award,
    BackfillReport,
    Badge,
    BadgeAwarded,
    BadgeCounts,
    BadgeNotRegisteredError,
    BadgeRegistry,
    CheckpointError,
    ConfigurationError,
    SchemaError,
)
from abadges.backfill import MAX_ERRORS, backfill_key
from abadges.exceptions import BackfillJobError
from abadges.tables import backfills
from tests.test_lifecycle import changes


@dataclasses.dataclass(frozen=True)
class Member:
    id: str
    points: int


class RankBadge(Badge):
    """Three levels by points."""

    slug = "rank"
    levels = ["Bronze", "Silver", "Gold"]
    events = ["scored"]

    def award(self, **state: Any) -> BadgeAwarded | None:
        level = min(state["user"].points // 100, 3)
        return BadgeAwarded(level=level) if level else None


class FanBadge(Badge):
    """A `multiple` badge, for users with an even number of points."""

    slug = "fan"
    levels = ["Fan"]
    events = ["scored"]
    multiple = True

    def award(self, **state: Any) -> BadgeAwarded | None:
        return BadgeAwarded() if state["user"].points % 2 == 0 else None


class ReaderBadge(Badge):
    """Reads its state from `state=`: the books a user has read."""

    slug = "reader"
    levels = ["Reader"]
    events = ["read"]
    deferred = True

    def freeze(self, **state: Any) -> dict[str, Any]:
        return {"books": state["books"]}

    async def award(self, **state: Any) -> BadgeAwarded | None:
        return BadgeAwarded() if state["books"] >= 3 else None


class LadderBadge(Badge):
    """Keeps only the highest level reached: `replaces_lower`."""

    slug = "ladder"
    levels = ["Step", "Climb", "Summit"]
    events = ["scored"]
    replaces_lower = True

    def award(self, **state: Any) -> BadgeAwarded | None:
        level = min(state["user"].points // 100, 3)
        return BadgeAwarded(level=level) if level else None


class WeeklyBadge(Badge):
    """Held for a week."""

    slug = "weekly"
    levels = ["This week"]
    events = ["scored"]
    expires_after = datetime.timedelta(days=7)

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class KarmaBadge(Badge):
    """Temporary: the level follows the points, down as well as up."""

    slug = "karma"
    levels = ["Liked", "Loved"]
    events = ["scored"]
    temporary = True

    def award(self, **state: Any) -> BadgeAwarded | None:
        level = min(state["user"].points // 150, 2)
        return BadgeAwarded(level=level) if level else None


def members(count: int) -> Iterator[Member]:
    """`count` members, points 0, 37, 74, ...: a generator, never a list."""
    for n in range(count):
        yield Member(f"m{n:04d}", (n * 37) % 400)


def expected(count: int) -> set[tuple[str, str, int]]:
    """What one clean backfill of `members(count)` by RankBadge and FanBadge records."""
    found = set()
    for member in members(count):
        level = min(member.points // 100, 3)
        if level:
            found.add((member.id, "rank", level))
        if member.points % 2 == 0:
            found.add((member.id, "fan", 1))
    return found


@pytest.fixture
async def site(registry: BadgeRegistry) -> AsyncIterator[BadgeRegistry]:
    for badge in (RankBadge, FanBadge, ReaderBadge, KarmaBadge, LadderBadge, WeeklyBadge):
        registry.register(badge)
    yield registry


async def held(registry: BadgeRegistry, user_ids: list[str]) -> set[tuple[str, str, int]]:
    found = set()
    for user_id in user_ids:
        found |= {(a.user_id, a.slug, a.level) for a in await registry.awards_for(user_id)}
    return found


async def all_awards(registry: BadgeRegistry) -> list[tuple[str, str, int, str]]:
    found = []
    for slug in registry.registered:
        found += [
            (a.user_id, a.slug, a.level, a.source)
            for a in await registry.holders(slug, limit=100_000)
        ]
    return sorted(found)


async def test_backfill_records_what_the_badges_give_once_with_source_backfill(
    site: BadgeRegistry,
) -> None:
    report = await site.backfill(members(1234), slugs=["rank", "fan"], batch_size=100)
    wanted = expected(1234)
    stored = await all_awards(site)
    # Exactly the plain computation: nothing missing, nothing twice, all marked "backfill".
    assert sorted(stored) == sorted((*award, "backfill") for award in wanted)
    assert (report.users, report.evaluations, report.granted, report.failed) == (
        1234,
        2468,
        len(wanted),
        0,
    )
    assert report.badges["rank"] == BadgeCounts(
        1234, sum(1 for a in wanted if a[1] == "rank"), 0, 0
    )
    assert report.seconds > 0 and not report.dry_run and report.resumed == 0
    # Its history rows say so too.
    history = await site.history(limit=10_000)
    assert {c.source for c in history} == {"backfill"} and len(history) == len(wanted)
    # Run again: everything is held, nothing is recorded twice, the multiple badge included.
    again = await site.backfill(members(1234), slugs=["rank", "fan"], batch_size=100)
    assert (again.granted, again.evaluations) == (0, 2468)
    assert sorted(await all_awards(site)) == sorted(stored)


async def test_backfill_reads_async_iterables_and_identities_through_the_loader(
    site: BadgeRegistry,
) -> None:
    points = {"ana": 250, "bob": 20}

    async def loader(user_id: str) -> Member:
        return Member(user_id, points[user_id])

    site._user_loader = loader

    async def ids() -> AsyncIterator[str]:
        for user_id in points:
            yield user_id

    report = await site.backfill(ids(), slugs=["rank"])
    assert report.granted == 1
    assert await held(site, ["ana", "bob"]) == {("ana", "rank", 2)}


async def test_a_multiple_badge_gets_one_award_per_user_from_backfills(site: BadgeRegistry) -> None:
    await site.possibly_award_badge("scored", user=Member("ana", 2))  # Fan, from an event.
    await site.backfill([Member("ana", 2)], slugs=["fan"])
    await site.backfill([Member("ana", 2)], slugs=["fan"])
    fans = await site.holders("fan")
    assert sorted(a.source for a in fans) == ["backfill", "event"]
    assert backfill_key("ana", "fan") != backfill_key("ana", "rank")


async def test_state_gives_award_more_state_and_deferred_badges_run_here(
    site: BadgeRegistry,
) -> None:
    books = {"ana": 5, "bob": 1}

    async def state(user: Member) -> dict[str, Any]:
        return {"books": books[user.id]}

    report = await site.backfill(
        [Member("ana", 0), Member("bob", 0)], slugs=["reader"], state=state
    )
    assert report.granted == 1
    assert await held(site, ["ana", "bob"]) == {("ana", "reader", 1)}


async def test_dry_run_writes_nothing_and_counts_what_a_run_does(site: BadgeRegistry) -> None:
    # Some held already, from events: the dry run must not count them.
    for member in list(members(300))[:50]:
        await site.possibly_award_badge("scored", user=member)
    before = await all_awards(site)
    announced: list[Award] = []
    site.on_award(announced.append)
    dry = await site.backfill(members(300), slugs=["rank", "fan", "karma"], dry_run=True)
    assert await all_awards(site) == before and announced == [] and dry.dry_run
    run = await site.backfill(members(300), slugs=["rank", "fan", "karma"])
    # The dry run's counts are the run's, badge by badge.
    assert dry.badges == run.badges and run.granted > 0
    assert len(await all_awards(site)) == len(before) + run.granted


async def test_revoke_takes_away_the_levels_award_no_longer_gives(site: BadgeRegistry) -> None:
    await site.grant("ana", "rank", 3, by="mod:1")
    await site.grant("ana", "rank", 2, by="mod:1")
    await site.grant("bob", "rank", 1, by="mod:1")
    await site.grant("bob", "fan", by="mod:1")
    await site.grant("cy", "rank", 1, by="mod:1")
    # ana is at level 1 now, bob at none; cy is still at the level held.
    users = [Member("ana", 151), Member("bob", 1), Member("cy", 121)]
    dry = await site.backfill(users, slugs=["rank", "fan"], revoke=True, dry_run=True)
    assert (dry.granted, dry.revoked) == (1, 3)
    revoked: list[Award] = []
    site.on_revoke(revoked.append)
    report = await site.backfill(users, slugs=["rank", "fan"], revoke=True)
    assert report.badges == dry.badges
    # A multiple badge keeps its awards: revoke covers badges held once.
    assert await held(site, ["ana", "bob", "cy"]) == {
        ("ana", "rank", 1),
        ("bob", "fan", 1),
        ("cy", "rank", 1),
    }
    assert sorted((a.user_id, a.level) for a in revoked) == [("ana", 2), ("ana", 3), ("bob", 1)]
    history = changes(await site.history(limit=100))
    assert (
        "revoked",
        "bob",
        "rank",
        1,
        "manual",
        None,
        "Backfill: award() now gives no level.",
    ) in history
    assert (
        "revoked",
        "ana",
        "rank",
        3,
        "manual",
        None,
        "Backfill: award() now gives level 1.",
    ) in history
    # Without revoke, the same run takes nothing away.
    await site.grant("ana", "rank", 3)
    assert (await site.backfill(users, slugs=["rank"])).revoked == 0


async def test_temporary_badges_settle_as_their_events_do(site: BadgeRegistry) -> None:
    await site.backfill([Member("ana", 300)], slugs=["karma"])
    assert await held(site, ["ana"]) == {("ana", "karma", 2)}
    report = await site.backfill([Member("ana", 160)], slugs=["karma"])
    assert (report.granted, report.revoked) == (1, 1)
    assert await held(site, ["ana"]) == {("ana", "karma", 1)}
    # The history says a backfill revoked it, not an event of the temporary badge.
    [revoked] = [c for c in await site.history("ana") if c.action == "revoked"]
    assert revoked.reason == "Backfill: award() now gives level 1."


async def test_replaces_lower_keeps_the_highest_level(site: BadgeRegistry) -> None:
    await site.grant("ana", "ladder", 1)
    users = [Member("ana", 250), Member("bob", 20)]  # bob reaches no level: nothing to settle.
    dry = await site.backfill(users, slugs=["ladder"], dry_run=True)
    report = await site.backfill(users, slugs=["ladder"])
    assert (report.granted, report.revoked) == (1, 1) and dry.badges == report.badges
    assert await held(site, ["ana", "bob"]) == {("ana", "ladder", 2)}


async def test_an_expired_award_is_earned_again_and_not_counted_as_revoked(
    site: BadgeRegistry,
) -> None:
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=8)
    await site.grant("ana", "weekly", force_timestamp=long_ago)
    assert await held(site, ["ana"]) == set()
    dry = await site.backfill([Member("ana", 0)], slugs=["weekly"], dry_run=True)
    report = await site.backfill([Member("ana", 0)], slugs=["weekly"])
    assert (report.granted, report.revoked) == (1, 0) and dry.badges == report.badges
    assert [c.action for c in await site.history("ana")] == ["granted", "expired", "granted"]


async def test_announce_false_calls_no_callback(site: BadgeRegistry) -> None:
    announced: list[Award] = []
    site.on_award(announced.append)
    site.on_revoke(announced.append)
    await site.grant("ana", "rank", 3)
    announced.clear()
    await site.backfill([Member("ana", 100)], slugs=["rank"], revoke=True, announce=False)
    assert announced == [] and await held(site, ["ana"]) == {("ana", "rank", 1)}
    await site.backfill([Member("bob", 100)], slugs=["rank"])
    assert [(a.user_id, a.source) for a in announced] == [("bob", "backfill")]


async def test_a_badge_that_raises_is_counted_and_named_and_the_others_go_on(
    site: BadgeRegistry,
) -> None:
    def state(user: Member) -> dict[str, Any]:
        if user.id == "m0003":
            raise LookupError("no such shelf")
        return {} if user.points % 3 else {"books": 4}

    report = await site.backfill(members(40), slugs=["reader", "rank"], state=state)
    # reader raises KeyError for users without "books"; state() raises for m0003.
    reader = report.badges["reader"]
    # m0003's state failed: not evaluated, and failed for each badge.
    assert (reader.evaluations, reader.failed + reader.granted) == (39, 40)
    assert reader.failed > MAX_ERRORS
    assert report.badges["rank"].failed == 1
    assert len(report.errors) == MAX_ERRORS
    notes = [" ".join(e.__notes__) for e in report.errors]
    assert any("Raised by badge 'reader' for user 'm0001'." in n for n in notes)
    assert "Raised while loading user Member(id='m0003'" in " ".join(notes)
    assert report.badges["rank"].granted == sum(1 for a in expected(40) if a[1] == "rank") - (
        1 if ("m0003", "rank", 1) in expected(40) else 0
    )
    as_dict = report.to_dict()
    assert as_dict["failed"] == report.failed and as_dict["errors"][0].startswith("KeyError: ")
    again = BackfillReport.from_dict(as_dict)
    assert again.badges == report.badges and isinstance(again.errors[0], BackfillJobError)


async def test_bad_arguments_are_refused_before_anything_is_written(site: BadgeRegistry) -> None:
    users = [Member("ana", 300)]
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"slugs": ["rank", "nope"]}, BadgeNotRegisteredError, "'nope'"),
        ({"slugs": "rank"}, TypeError, "slugs must be a list"),
        ({"slugs": []}, ValueError, "slugs is empty"),
        ({"batch_size": 0}, ValueError, "batch_size must be a whole number above 0"),
        ({"concurrency": True}, ValueError, "concurrency must be"),
        ({"checkpoint": ""}, ValueError, "checkpoint must be None or a name"),
        ({"checkpoint": "x", "dry_run": True}, ValueError, "a dry run writes nothing"),
        ({"state": 3}, TypeError, "state must be callable"),
        ({"progress": 3}, TypeError, "progress must be callable"),
        ({"deferred": True, "state": dict}, ValueError, "cannot send state="),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            await site.backfill(users, **options)
    for bad in ("ana", {"ana": 1}, 3):
        with pytest.raises(TypeError, match="users must be an iterable"):
            await site.backfill(bad)  # type: ignore[arg-type]
    assert await all_awards(site) == []


async def test_a_registry_without_badges_says_so(database_url: str) -> None:
    empty = BadgeRegistry()
    empty.configure(database_url=database_url, queue="inline")
    async with empty.lifespan():
        with pytest.raises(ConfigurationError, match="no badge to evaluate: none is registered"):
            await empty.backfill([Member("ana", 300)])


async def test_deferred_needs_the_redis_queue(database_url: str) -> None:
    registry = BadgeRegistry()
    registry.register(RankBadge)
    registry.configure(database_url=database_url, queue="inline")
    async with registry.lifespan():
        with pytest.raises(ConfigurationError, match='needs the queue setting "redis"'):
            await registry.backfill([Member("ana", 300)], deferred=True)


class Interrupted(Exception):
    pass


def interrupted(count: int, after: int) -> Iterator[Member]:
    """`members(count)`, cut by an error after `after` of them, as a crash would."""
    for n, member in enumerate(members(count)):
        if n == after:
            raise Interrupted()
        yield member


async def checkpoint_row(registry: BadgeRegistry, name: str) -> Any:
    query = sa.select(backfills).where(backfills.c.name == name)
    return await registry.database.fetch_one(query)


async def test_a_checkpoint_resumes_a_run_that_stopped_where_it_stopped(
    site: BadgeRegistry,
) -> None:
    seen: list[int] = []
    with pytest.raises(Interrupted):
        await site.backfill(
            interrupted(1000, 730),
            slugs=["rank", "fan"],
            batch_size=100,
            concurrency=3,
            checkpoint="spring",
            progress=lambda report: seen.append(report.users),
        )
    row = await checkpoint_row(site, "spring")
    # Every batch written before the crash is saved: 7 whole batches of 100.
    assert row is not None and row.position == 700 and seen[-1] == 700
    assert row.last_user_id in ("m0699", b"m0699")
    resumed = await site.backfill(
        members(1000), slugs=["fan", "rank"], batch_size=100, checkpoint="spring"
    )
    assert (resumed.resumed, resumed.users) == (700, 300)
    # Exactly the clean run's awards, and the checkpoint is gone once the run ends.
    assert {a[:3] for a in await all_awards(site)} == expected(1000)
    assert len(await all_awards(site)) == len(expected(1000))
    assert await checkpoint_row(site, "spring") is None


async def test_a_checkpoint_refuses_other_badges_options_or_users(site: BadgeRegistry) -> None:
    with pytest.raises(Interrupted):
        await site.backfill(interrupted(300, 250), slugs=["rank"], batch_size=100, checkpoint="c")
    with pytest.raises(CheckpointError, match="other badges or options"):
        await site.backfill(members(300), slugs=["rank", "fan"], checkpoint="c")
    with pytest.raises(CheckpointError, match="other badges or options"):
        await site.backfill(members(300), slugs=["rank"], revoke=True, checkpoint="c")
    others = (Member(f"x{n}", 0) for n in range(300))
    with pytest.raises(CheckpointError, match="stopped after user 'm0199', user 200 of the"):
        await site.backfill(others, slugs=["rank"], checkpoint="c")
    with pytest.raises(CheckpointError, match="has 200 users done, but only 150 users"):
        await site.backfill(members(150), slugs=["rank"], checkpoint="c")
    # The checkpoint is still there for the right run.
    report = await site.backfill(members(300), slugs=["rank"], batch_size=100, checkpoint="c")
    assert (report.resumed, report.users) == (200, 100)


async def test_an_error_of_the_database_ends_the_run(site: BadgeRegistry) -> None:
    # Guards: a settlement that failed is raised, not counted as written: the checkpoint
    # stays where it was, and the run can be resumed once the fault is mended.
    away = sa.text("ALTER TABLE abadges_awards RENAME TO abadges_awards_away")
    back = sa.text("ALTER TABLE abadges_awards_away RENAME TO abadges_awards")
    await site.database.execute(away)
    try:
        with pytest.raises(SchemaError, match="does not exist"):
            await site.backfill(members(10), slugs=["karma"], checkpoint="gone")
    finally:
        await site.database.execute(back)
    # No batch was written: the checkpoint has nothing to save yet.
    assert await checkpoint_row(site, "gone") is None
