"""Leaderboards, standings, stats and progress, on every database: the figures of small sites
worked out by hand, and the totals the triggers keep against a recount of the awards table
after concurrent awards, revocations, settlements and expiries."""

from __future__ import annotations

import datetime
import random
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from abadges import (
    Badge,
    BadgeAwarded,
    BadgeDefinitionError,
    BadgeDetail,
    BadgeNotRegisteredError,
    BadgeProgress,
    BadgeRegistry,
    BadgeStats,
    InvalidAwardError,
    Progress,
    Standing,
)
from abadges.storage import totals as totals_module
from abadges.storage.base import text
from abadges.tables import awards, level_counts, totals

UTC = datetime.UTC
START = datetime.datetime(2024, 5, 1, tzinfo=UTC)


class RankBadge(Badge):
    """Three levels worth 10, 25 and 50 points; the level is the state's."""

    slug = "rank"
    levels = [
        BadgeDetail("Bronze", points=10),
        BadgeDetail("Silver", points=25, image="/silver.svg"),
        BadgeDetail("Gold", points=50),
    ]
    events = ["ranked"]
    image = "/rank.svg"
    group = "Reputation"

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded(level=state["level"])

    def progress(self, **state: Any) -> Progress | None:
        score = state.get("score")
        return None if score is None else Progress(score, 100)


class ThanksBadge(Badge):
    """Earned again for each thanks, 2 points each."""

    slug = "thanks"
    levels = [BadgeDetail("Thanked", points=2)]
    events = ["thanked"]
    multiple = True

    async def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()

    async def progress(self, **state: Any) -> Progress:
        return Progress(state.get("thanks", 0), 5)


class WeeklyBadge(Badge):
    """Held a week; 1 point."""

    slug = "weekly"
    levels = ["This week"]
    events = ["visited"]
    expires_after = datetime.timedelta(days=7)
    hidden = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class LadderBadge(Badge):
    """Holding a level replaces the lower ones: 5, 10, 20 points."""

    slug = "ladder"
    levels = [BadgeDetail(name, points=p) for name, p in (("Step", 5), ("Climb", 10), ("Top", 20))]
    events = ["climbed"]
    replaces_lower = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded(level=state["level"])


@pytest.fixture
async def site(registry: BadgeRegistry) -> BadgeRegistry:
    for badge in (RankBadge, ThanksBadge, WeeklyBadge, LadderBadge):
        registry.register(badge)
    return registry


def rows(standings: list[Standing]) -> list[tuple[int, str, int, int]]:
    return [(s.rank, s.user_id, s.points, s.awards) for s in standings]


async def test_a_leaderboard_ranks_by_points_with_shared_ranks_and_pages(
    site: BadgeRegistry,
) -> None:
    await site.grant("ana", "rank", 3)  # 50
    await site.grant("bo", "rank", 2)  # 25
    await site.grant("bo", "rank", 1)  # 35
    await site.grant("cy", "rank", 2)
    await site.grant("cy", "rank", 1)  # 35
    for _ in range(3):
        await site.possibly_award_badge("thanked", user="dee")  # 6
    await site.grant("eve", "thanks")  # 2
    board = await site.leaderboard()
    assert rows(board) == [
        (1, "ana", 50, 1),
        (2, "bo", 35, 2),
        (2, "cy", 35, 2),
        (4, "dee", 6, 3),
        (5, "eve", 2, 1),
    ]
    # A page that starts inside a tie keeps the tie's rank.
    assert rows(await site.leaderboard(limit=2, offset=2)) == [(2, "cy", 35, 2), (4, "dee", 6, 3)]
    assert await site.leaderboard(offset=5) == []
    by_awards = await site.leaderboard(by="awards")
    assert [(s.rank, s.user_id) for s in by_awards] == [
        (1, "dee"),
        (2, "bo"),
        (2, "cy"),
        (4, "ana"),
        (4, "eve"),
    ]
    assert rows(await site.leaderboard(slug="thanks")) == [(1, "dee", 6, 3), (2, "eve", 2, 1)]
    assert await site.standing("cy") == Standing(2, "cy", 35, 2)
    assert await site.standing("eve", by="awards") == Standing(4, "eve", 2, 1)
    assert await site.standing("ana", slug="thanks") is None
    assert await site.standing("nobody") is None


async def test_revocations_and_replacements_leave_the_totals_exact(site: BadgeRegistry) -> None:
    await site.grant("ana", "rank", 3)
    await site.grant("ana", "rank", 1)
    for _ in range(2):
        await site.possibly_award_badge("thanked", user="ana")
    await site.possibly_award_badge("climbed", user="ana", level=1)
    await site.possibly_award_badge("climbed", user="ana", level=3)  # replaces level 1
    assert await site.standing("ana") == Standing(1, "ana", 50 + 10 + 4 + 20, 5)
    await site.revoke("ana", "rank", 3)  # a badge held once: its row is deleted
    await site.revoke("ana", "thanks")  # a multiple badge: its rows stay, revoked
    assert await site.standing("ana") == Standing(1, "ana", 10 + 20, 2)
    await site.revoke("ana", "rank")
    await site.revoke("ana", "ladder")
    assert await site.standing("ana") is None
    assert await site.leaderboard() == []
    assert await recount(site) == await stored_totals(site)


async def test_an_expired_award_counts_in_no_figure_before_and_after_it_is_moved(
    site: BadgeRegistry,
) -> None:
    long_ago = datetime.datetime.now(UTC) - datetime.timedelta(days=30)
    await site.grant("ana", "weekly", force_timestamp=long_ago)  # expired at once
    await site.grant("ana", "rank", 1)
    await site.grant("bo", "weekly")
    await site.grant("cy", "weekly", force_timestamp=long_ago)
    expected = [(1, "ana", 10, 1), (2, "bo", 1, 1)]
    weekly = [(1, "bo", 1, 1)]
    for moved in (False, True):
        assert rows(await site.leaderboard()) == expected, moved
        assert rows(await site.leaderboard(slug="weekly")) == weekly, moved
        assert await site.standing("ana") == Standing(1, "ana", 10, 1), moved
        assert await site.standing("cy") is None, moved
        figures = {(s.slug, s.level): (s.holders, s.share) for s in await site.stats()}
        assert figures["weekly", 1] == (1, 0.5), moved
        assert await site.expire_awards() == (0 if moved else 2)
    assert await recount(site) == await stored_totals(site)


@pytest.mark.parametrize("lapsed_users", [500, 3])
async def test_pages_and_standings_with_awards_expired_and_not_moved_equal_a_ranking(
    site: BadgeRegistry, lapsed_users: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users whose awards expired fall down the board before the job moves the awards: every
    page (read from the totals, the lapsed users placed anew; or, beyond `LAPSED_USERS`,
    computed), every standing and the holder counts equal a ranking computed here."""
    monkeypatch.setattr(totals_module, "LAPSED_USERS", lapsed_users)
    chance = random.Random(15)
    long_ago = datetime.datetime.now(UTC) - datetime.timedelta(days=30)
    site.register(Passing)
    users = [f"u{n:02}" for n in range(60)]
    for user in users:
        for level in range(1, chance.randint(0, 3) + 1):
            await site.grant(user, "rank", level)
        for _ in range(chance.randint(0, 3)):
            await site.grant(user, "thanks")
        if chance.random() < 0.5:
            lapsed = chance.random() < 0.15
            await site.grant(user, "weekly", force_timestamp=long_ago if lapsed else None)
    # The top user and one holding nothing else lapse too.
    await site.grant("u00", "rank", 3)
    await site.grant("u00", "weekly", force_timestamp=long_ago)
    await site.grant("solo", "weekly", force_timestamp=long_ago)
    # And one falls from the top to the middle, past many.
    for level in (1, 2, 3):
        await site.grant("fall", "rank", level)
    for _ in range(12):
        await site.grant("fall", "passing", force_timestamp=long_ago)
    for by in ("points", "awards"):
        for slug in (None, "thanks", "weekly"):
            board = await computed_leaderboard(site, by=by, slug=slug)
            assert board, (by, slug)
            for limit in (1, 3, 7):
                for offset in range(len(board) + 2):
                    page = await site.leaderboard(limit, offset, by=by, slug=slug)
                    assert rows(page) == board[offset : offset + limit], (by, slug, limit, offset)
            places = {row[1]: row for row in board}
            for user in [*users, "solo", "fall"]:
                got = await site.standing(user, by=by, slug=slug)
                want = places.get(user)
                assert (None if got is None else rows([got])[0]) == want, (by, slug, user)
    figures = {(s.slug, s.level): s.holders for s in await site.stats()}
    holders = {row[1] for row in await computed_leaderboard(site, slug="thanks")}
    assert figures["thanks", 1] == len(holders)
    assert figures["weekly", 1] == len(await computed_leaderboard(site, slug="weekly"))
    everyone = len(await computed_leaderboard(site))
    assert {s.share for s in await site.stats() if s.slug == "thanks"} == {len(holders) / everyone}
    await site.expire_awards()
    assert await recount(site) == await stored_totals(site)


async def test_a_leaderboard_since_a_time_counts_the_awards_of_that_time(
    site: BadgeRegistry,
) -> None:
    await site.grant("ana", "rank", 3, force_timestamp=START)
    await site.grant("bo", "rank", 1, force_timestamp=START + datetime.timedelta(days=2))
    await site.grant("bo", "rank", 2, force_timestamp=START + datetime.timedelta(days=3))
    await site.grant("cy", "rank", 1, force_timestamp=START + datetime.timedelta(days=3))
    since = START + datetime.timedelta(days=1)
    assert rows(await site.leaderboard(since=since)) == [(1, "bo", 35, 2), (2, "cy", 10, 1)]
    assert rows(await site.leaderboard(since=since, by="awards", limit=1, offset=1)) == [
        (2, "cy", 10, 1)
    ]
    assert await site.standing("cy", since=since) == Standing(2, "cy", 10, 1)
    assert rows(await site.leaderboard(since=since, slug="thanks")) == []
    assert await site.standing("ana", since=since) is None
    assert rows(await site.leaderboard()) == [
        (1, "ana", 50, 1),
        (2, "bo", 35, 2),
        (3, "cy", 10, 1),
    ]


async def test_stats_give_holders_share_and_dates_per_level(site: BadgeRegistry) -> None:
    day = datetime.timedelta(days=1)
    await site.grant("ana", "rank", 1, force_timestamp=START)
    await site.grant("bo", "rank", 1, force_timestamp=START + day)
    await site.grant("bo", "rank", 2, force_timestamp=START + 2 * day)
    for _ in range(3):  # Three awards, one holder.
        await site.possibly_award_badge("thanked", user="cy", force_timestamp=START + 3 * day)
    await site.grant("dee", "thanks", force_timestamp=START + 4 * day)
    await site.revoke("dee", "thanks")
    stats = {(s.slug, s.level): s for s in await site.stats()}
    assert [key for key in stats] == [
        ("rank", 1),
        ("rank", 2),
        ("rank", 3),
        ("thanks", 1),
        ("weekly", 1),
        ("ladder", 1),
        ("ladder", 2),
        ("ladder", 3),
    ]
    assert stats["rank", 1] == BadgeStats("rank", 1, "Bronze", 2, 2 / 3, START, START + day)
    assert stats["rank", 2] == BadgeStats(
        "rank", 2, "Silver", 1, 1 / 3, START + 2 * day, START + 2 * day
    )
    assert stats["rank", 3] == BadgeStats("rank", 3, "Gold", 0, 0.0, None, None)
    assert stats["thanks", 1] == BadgeStats(
        "thanks", 1, "Thanked", 1, 1 / 3, START + 3 * day, START + 3 * day
    )
    of_100 = {(s.slug, s.level): s.share for s in await site.stats(total_users=100)}
    assert of_100["rank", 1] == 0.02
    assert (await site.award_counts())["thanks"] == {1: 3}  # The older call agrees.


async def test_a_registry_without_badges_has_no_stats(registry: BadgeRegistry) -> None:
    assert await registry.stats() == []


async def test_the_badge_attributes_of_pages(site: BadgeRegistry) -> None:
    rank = site.get_badge("rank")
    assert (rank.image_of(1), rank.image_of(2), rank.points_of(3)) == (
        "/rank.svg",
        "/silver.svg",
        50,
    )
    assert (rank.group, rank.hidden, site.get_badge("weekly").hidden) == ("Reputation", False, True)
    weekly = site.get_badge("weekly")
    assert (weekly.image_of(1), weekly.has_progress, weekly.progress(user="ana")) == (
        None,
        False,
        None,
    )


async def test_progress_for_gives_each_badge_s_next_level(site: BadgeRegistry) -> None:
    await site.grant("ana", "rank", 1)
    await site.grant("ana", "rank", 2)
    found = await site.progress_for("ana", score=40, thanks=7)
    assert found == {
        "rank": BadgeProgress("rank", 2, 3, 40, 100, 0.4),
        "thanks": BadgeProgress("thanks", 0, 1, 7, 5, 1.0),
    }
    assert await site.progress_for("ana", slug="rank") == {}  # progress() gave None.
    await site.grant("ana", "rank", 3)
    assert (await site.progress_for("ana", slug="rank", score=100))["rank"] == BadgeProgress(
        "rank", 3, None, 100, 100, 1.0
    )
    with pytest.raises(BadgeNotRegisteredError):
        await site.progress_for("ana", slug="nope")


async def test_a_bad_progress_is_refused_naming_the_badge(registry: BadgeRegistry) -> None:
    class Bad(Badge):
        slug = "bad"
        levels = ["One"]
        events = ["x"]

        def award(self, **state: Any) -> None:
            return None

        def progress(self, **state: Any) -> Any:
            return state["give"]

    registry.register(Bad)
    for give, message in (
        ((1, 2), r"Badge 'bad' progress\(\) returned \(1, 2\); expected a Progress or None\."),
        (Progress(True, 2), r"returned current=True; expected a finite number\."),
        (Progress(1, float("nan")), r"returned target=nan; expected a finite number\."),
    ):
        with pytest.raises(InvalidAwardError, match=message):
            await registry.progress_for("ana", give=give)
    with pytest.raises(KeyError) as raised:
        await registry.progress_for("ana")
    assert raised.value.__notes__ == ["Raised by the progress() of badge 'bad'."]
    assert (await registry.progress_for("ana", give=Progress(-3, 0)))["bad"].fraction == 1.0


async def test_bad_arguments_are_refused_naming_the_argument(site: BadgeRegistry) -> None:
    cases: list[tuple[Any, type[Exception], str]] = [
        (
            site.leaderboard(by="karma"),  # type: ignore[arg-type]
            ValueError,
            'by must be "points" or "awards"',
        ),
        (site.leaderboard(limit=-1), ValueError, r"leaderboard\(\) limit must be"),
        (site.leaderboard(slug="nope"), BadgeNotRegisteredError, "'nope'"),
        (site.leaderboard(since=datetime.datetime(2024, 1, 1)), ValueError, "timezone-aware"),
        (
            site.standing("ana", by=3),  # type: ignore[arg-type]
            ValueError,
            r"standing\(\) by must be",
        ),
        (site.standing("ana", slug="nope"), BadgeNotRegisteredError, "'nope'"),
        (
            site.standing("ana", since="today"),  # type: ignore[arg-type]
            ValueError,
            "since must be None",
        ),
        (site.stats(total_users=-1), ValueError, "total_users must be None or a whole number"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            await call


def test_bad_points_images_and_groups_are_refused_at_registration() -> None:
    registry = BadgeRegistry()
    for attributes, message in (
        ({"levels": [BadgeDetail("A", points=-1)]}, r"levels\[0\] \('A'\) has points=-1"),
        ({"levels": ["A", BadgeDetail("B", points=True)]}, r"levels\[1\] \('B'\) has points=True"),
        ({"levels": [BadgeDetail("A", image="")]}, r"has image=''; an image must be None"),
        ({"image": 3}, r"\.image must be None or a non-empty string; got 3"),
        ({"group": " "}, r"\.group must be None or a non-empty string"),
        ({"hidden": 1}, r"\.hidden must be True or False; got 1"),
    ):
        namespace = {"slug": "x", "levels": ["A"], "events": ["e"], "award": lambda self: None}
        cls = type("Odd", (Badge,), {**namespace, **attributes})
        with pytest.raises(BadgeDefinitionError, match=message):
            registry.register(cls)


async def test_totals_stay_exact_under_concurrent_awards_revokes_and_expiries(
    site: BadgeRegistry,
) -> None:
    """Guards the triggers under concurrency: many tasks on many connections award, grant,
    revoke, settle and expire the same users' badges at once; the totals and level counts must
    then equal a recount of the awards table, and the leaderboard a ranking computed here."""
    users = [f"u{n}" for n in range(6)]
    long_ago = datetime.datetime.now(UTC) - datetime.timedelta(days=30)
    rng = random.Random(15)

    async def churn(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            user = rng.choice(users)
            action = rng.randrange(7)
            if action == 0:
                await site.possibly_award_badge("ranked", user=user, level=rng.randint(1, 3))
            elif action == 1:
                await site.possibly_award_badge("thanked", user=user)
            elif action == 2:
                await site.possibly_award_badge("climbed", user=user, level=rng.randint(1, 3))
            elif action == 3:
                when = long_ago if rng.random() < 0.5 else None
                await site.grant(user, "weekly", force_timestamp=when)
            elif action == 4:
                await site.revoke(user, rng.choice(["rank", "thanks", "ladder", "weekly"]))
            elif action == 5:
                await site.expire_awards(batch_size=2)
            else:
                await site.revoke(user, "rank", rng.randint(1, 3))

    async with anyio.create_task_group() as group:
        for task in range(8):
            group.start_soon(churn, rng.randrange(1 << 30) + task)
    assert await recount(site) == await stored_totals(site)
    expected = await computed_leaderboard(site)
    assert rows(await site.leaderboard(limit=100)) == expected
    await site.expire_awards()
    assert await recount(site) == await stored_totals(site)
    assert rows(await site.leaderboard(limit=100)) == await computed_leaderboard(site)


async def recount(registry: BadgeRegistry) -> dict[str, Any]:
    """The totals and level counts (level 0: holders), counted from the awards table (rows
    not revoked)."""
    database = registry.database
    counted: dict[tuple[str, str], tuple[int, int]] = {}
    levels: dict[tuple[str, int], int] = {}
    query = sa.select(awards.c.user_id, awards.c.slug, awards.c.level, awards.c.points).where(
        awards.c.revoked_at.is_(None)
    )
    for row in await database.fetch_all(query):
        user_id, slug, level, points = text(row[0]), text(row[1]), int(row[2]), int(row[3])
        for scope in (slug, ""):
            p, n = counted.get((user_id, scope), (0, 0))
            counted[user_id, scope] = (p + points, n + 1)
        levels[slug, level] = levels.get((slug, level), 0) + 1
    # Level 0: the holders of each slug ("" for any badge).
    for _, scope in counted:
        levels[scope, 0] = levels.get((scope, 0), 0) + 1
    return {"totals": counted, "levels": levels}


async def stored_totals(registry: BadgeRegistry) -> dict[str, Any]:
    """What the triggers keep, without the rows that came down to zero."""
    database = registry.database
    found = {
        (text(row[0]), text(row[1])): (int(row[2]), int(row[3]))
        for row in await database.fetch_all(totals.select())
        if int(row[3]) or int(row[2])
    }
    levels: dict[tuple[str, int], int] = {}
    for row in await database.fetch_all(level_counts.select()):
        key = (text(row[0]), int(row[1]))
        levels[key] = levels.get(key, 0) + int(row[3])
    return {"totals": found, "levels": {key: n for key, n in levels.items() if n}}


async def computed_leaderboard(
    registry: BadgeRegistry, by: str = "points", slug: str | None = None
) -> list[tuple[int, str, int, int]]:
    """The leaderboard (by points or awards, of all badges or one), computed here from the
    awards held now."""
    now = datetime.datetime.now(UTC)
    scores: dict[str, tuple[int, int]] = {}
    for row in await registry.database.fetch_all(awards.select()):
        expires_at = row["expires_at"]
        if expires_at is not None and expires_at.replace(tzinfo=UTC) <= now:
            continue
        if row["revoked_at"] is not None or slug not in (None, text(row["slug"])):
            continue
        user_id = text(row["user_id"])
        p, n = scores.get(user_id, (0, 0))
        scores[user_id] = (p + int(row["points"]), n + 1)
    value = 0 if by == "points" else 1
    ordered = sorted(scores.items(), key=lambda item: (-item[1][value], item[0]))
    board: list[tuple[int, str, int, int]] = []
    for place, (user_id, (p, n)) in enumerate(ordered, start=1):
        rank = board[-1][0] if board and board[-1][2 + value] == (p, n)[value] else place
        board.append((rank, user_id, p, n))
    return board


class Passing(Badge):
    """Held a day, earned again and again."""

    slug = "passing"
    levels = ["Passing"]
    events = ["passed"]
    multiple = True
    expires_after = datetime.timedelta(days=1)

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


#: Are queries of this database waiting for a lock? (A transaction id's lock has no database.)
WAITING = (
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE NOT l.granted AND a.datname = current_database()"
)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("attempts", [20, 1])
async def test_an_expiry_chosen_as_a_deadlock_s_victim_runs_again(
    site: BadgeRegistry, database_url: str, attempts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the retry of a write that PostgreSQL picks as a deadlock's victim. The expiry
    moves ana's award (a DELETE, whose trigger locks ana's totals) then bo's (an UPDATE,
    bo's totals), which another transaction holds; that one then waits for ana's: a deadlock,
    which PostgreSQL breaks by rolling back the expiry, the first to wait. With one attempt
    (no retry) the expiry fails with the deadlock, transient; with retries it moves both."""
    import asyncpg  # type: ignore[import-untyped]

    from abadges import is_transient
    from abadges.storage import base as storage_base

    site.register(Passing)
    monkeypatch.setattr(storage_base, "DEADLOCK_ATTEMPTS", attempts)
    long_ago = datetime.datetime.now(UTC) - datetime.timedelta(days=30)
    await site.grant("ana", "weekly", force_timestamp=long_ago)
    await site.grant("bo", "passing", force_timestamp=long_ago)
    other = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    lock = f"SELECT 1 FROM {totals.name} WHERE user_id = $1 AND slug = '' FOR UPDATE"
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SET LOCAL deadlock_timeout = '10s'")  # The expiry detects it.
        await other.execute(lock, "bo")
        outcome: list[object] = []

        async def expire() -> None:
            try:
                outcome.append(await site.expire_awards())
            except Exception as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(expire)
            try:
                with anyio.fail_after(10):
                    while not await other.fetchval(WAITING):  # noqa: ASYNC110 - the server knows
                        await anyio.sleep(0.02)
                await other.execute(lock, "ana")  # Waits until the expiry is rolled back.
            finally:
                await transaction.rollback()  # Lets the expiry (again) go on.
    finally:
        await other.close()
    if attempts == 1:
        [error] = outcome
        assert isinstance(error, asyncpg.exceptions.DeadlockDetectedError) and is_transient(error)
        assert await site.expire_awards() == 2
    else:
        assert outcome == [2]
    assert await recount(site) == await stored_totals(site)
    assert await site.leaderboard() == []
