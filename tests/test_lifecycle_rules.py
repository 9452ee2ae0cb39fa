"""The lifecycle's rules: `expires_after`, `temporary` and `replaces_lower`, and the periodic
expiry; on every database."""

from __future__ import annotations

import datetime
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from abadges import (
    Award,
    Badge,
    BadgeAwarded,
    BadgeDefinitionError,
    BadgeErrorGroup,
    BadgeRegistry,
    InvalidStateError,
    SchemaError,
)
from tests.support import Rows
from tests.support.race_child import LadderBadge, RankNowBadge
from tests.test_lifecycle import changes

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


class MonthlyBadge(Badge):
    """Held for 30 days from its award."""

    slug = "monthly"
    levels = ["Top contributor"]
    events = ["contributed"]
    expires_after = 30 * DAY

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class StreakBadge(Badge):
    """A `multiple` badge that expires: each award is one streak."""

    slug = "streak"
    levels = ["Streak"]
    events = ["streaked"]
    multiple = True
    expires_after = 7 * DAY

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class KarmaBadge(Badge):
    """Temporary: the levels follow the karma, down as well as up."""

    slug = "karma"
    levels = ["Liked", "Loved", "Adored"]
    events = ["voted"]
    temporary = True

    def award(self, **state: Any) -> BadgeAwarded | None:
        level = min(state["karma"] // 10, 3)
        return BadgeAwarded(level=level) if level else None


@pytest.fixture
async def rules(registry: BadgeRegistry) -> AsyncIterator[BadgeRegistry]:
    for badge in (MonthlyBadge, StreakBadge, KarmaBadge, LadderBadge, RankNowBadge):
        registry.register(badge)
    yield registry


class Announced:
    """What the `on_award` and `on_revoke` callbacks were called with, as (slug, level)."""

    def __init__(self, registry: BadgeRegistry) -> None:
        self.awarded: list[Award] = []
        self.ended: list[Award] = []
        registry.on_award(self.awarded.append)
        registry.on_revoke(self.ended.append)

    def take(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        taken = ([(a.slug, a.level) for a in self.awarded], [(a.slug, a.level) for a in self.ended])
        self.awarded.clear()
        self.ended.clear()
        return taken


async def levels(registry: BadgeRegistry, user: str, slug: str) -> list[int]:
    return sorted(a.level for a in await registry.awards_for(user) if a.slug == slug)


# Definitions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            {"multiple": True, "temporary": True},
            "sets both multiple = True and temporary = True",
        ),
        (
            {"multiple": True, "replaces_lower": True},
            "sets both multiple = True and replaces_lower = True",
        ),
        ({"temporary": 1}, r"Bad.temporary must be True or False; got 1\."),
        ({"replaces_lower": "yes"}, "Bad.replaces_lower must be True or False"),
        ({"expires_after": 30}, r"Bad.expires_after must be None or a positive .*; got 30\."),
        ({"expires_after": datetime.timedelta(0)}, "must be None or a positive"),
        ({"expires_after": -DAY}, "must be None or a positive"),
    ],
)
def test_bad_lifecycle_attributes_are_refused_at_register(
    attributes: dict[str, Any], message: str
) -> None:
    def award(self: Badge, **state: Any) -> None:
        return None

    namespace = {"slug": "bad", "levels": ["One"], "events": ["e"], "award": award, **attributes}
    bad = type("Bad", (Badge,), namespace)
    registry = BadgeRegistry()
    with pytest.raises(BadgeDefinitionError, match=message):
        registry.register(bad)
    assert dict(registry.registered) == {}


# expires_after ------------------------------------------------------------------------------


async def test_an_award_expires_after_its_time_and_counts_in_no_query(
    rules: BadgeRegistry,
) -> None:
    [award] = await rules.possibly_award_badge("contributed", user="ana")
    assert award.expires_at == award.awarded_at + 30 * DAY
    assert await rules.awards_for("ana") == [award]
    # Awarded 31 days ago: expired, in no query, although its row is still there.
    old = now() - 31 * DAY
    [gone] = await rules.possibly_award_badge("contributed", user="bo", force_timestamp=old)
    assert gone.expires_at is not None and gone.expires_at < now()
    assert await rules.awards_for("bo") == []
    assert await rules.badge_count("bo") == 0
    assert not await rules.has_badge("bo", "monthly")
    assert await rules.holders("monthly") == [award]
    assert (await rules.award_counts())["monthly"] == {1: 1}
    assert await rules.revoke("bo", "monthly") == 0


async def test_an_expired_award_is_earned_again_at_once(rules: BadgeRegistry) -> None:
    announced = Announced(rules)
    old = now() - 31 * DAY
    [first] = await rules.possibly_award_badge("contributed", user="ana", force_timestamp=old)
    announced.take()
    # Before any expiry job: the expired award gives way to the new one, in the same write.
    [again] = await rules.possibly_award_badge("contributed", user="ana")
    assert again.id != first.id
    assert await rules.awards_for("ana") == [again]
    assert announced.take() == ([("monthly", 1)], [("monthly", 1)])
    assert announced.ended == [] and announced.awarded == []
    history = await rules.history("ana")
    assert changes(history) == [
        ("granted", "ana", "monthly", 1, "event", None, None),
        ("expired", "ana", "monthly", 1, "event", None, None),
        ("granted", "ana", "monthly", 1, "event", None, None),
    ]
    assert history[1].at == first.expires_at
    # Held now: a third event records nothing.
    assert await rules.possibly_award_badge("contributed", user="ana") == []
    assert await rules.expire_awards() == 0


async def test_a_grant_expires_too_and_replaces_an_expired_award(rules: BadgeRegistry) -> None:
    old = now() - 31 * DAY
    first = await rules.grant("ana", "monthly", by="mod:7", force_timestamp=old)
    assert first is not None and first.expires_at == old + 30 * DAY
    again = await rules.grant("ana", "monthly", by="mod:7", reason="Again")
    assert again is not None and again.id != first.id
    assert [c.action for c in await rules.history("ana")] == ["granted", "expired", "granted"]


async def test_expire_awards_moves_each_expired_award_to_the_history_once(
    rules: BadgeRegistry, stored_rows: Rows
) -> None:
    announced = Announced(rules)
    old = now() - 31 * DAY
    for user in ("ana", "bo", "cy"):
        await rules.possibly_award_badge("contributed", user=user, force_timestamp=old)
    await rules.possibly_award_badge("contributed", user="dee")  # Still held.
    await rules.possibly_award_badge(
        "streaked", user="ana", event_key="week-1", force_timestamp=old
    )
    announced.take()

    assert await rules.expire_awards(batch_size=2) == 4
    assert sorted(announced.take()[1]) == [("monthly", 1)] * 3 + [("streak", 1)]
    assert await rules.expire_awards() == 0
    assert announced.take() == ([], [])
    # The badge held once loses its row; the streak keeps its own, so that its key stays
    # taken: replaying the event that gave it records nothing.
    assert sorted(await stored_rows()) == [("ana", "streak", 1), ("dee", "monthly", 1)]
    replay = await rules.possibly_award_badge(
        "streaked", user="ana", event_key="week-1", force_timestamp=old
    )
    assert replay == []
    # A batch of streaks alone: rows kept, none deleted.
    await rules.possibly_award_badge("streaked", user="bo", event_key="week-2", force_timestamp=old)
    assert await rules.expire_awards() == 1
    assert ("bo", "streak", 1) in await stored_rows()
    expired = [c for c in await rules.history() if c.action == "expired"]
    assert sorted((c.user_id, c.slug) for c in expired) == [
        ("ana", "monthly"),
        ("ana", "streak"),
        ("bo", "monthly"),
        ("bo", "streak"),
        ("cy", "monthly"),
    ]
    assert {c.at for c in expired} == {old + 30 * DAY, old + 7 * DAY}
    assert [a.slug for a in await rules.awards_for("dee")] == ["monthly"]


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5])
async def test_expire_awards_refuses_a_bad_batch_size(
    rules: BadgeRegistry, batch_size: Any
) -> None:
    with pytest.raises(ValueError, match="batch_size must be a whole number above 0"):
        await rules.expire_awards(batch_size=batch_size)


async def test_an_expiry_past_the_year_9999_is_refused(rules: BadgeRegistry) -> None:
    late = datetime.datetime(9999, 12, 25, tzinfo=UTC)
    with pytest.raises(BadgeErrorGroup) as caught:
        await rules.possibly_award_badge("contributed", user="ana", force_timestamp=late)
    [error] = caught.value.exceptions
    assert isinstance(error, InvalidStateError)
    assert "Badge 'monthly' expires 30 days, 0:00:00 after it is awarded" in str(error)
    assert "would expire after the year 9999" in str(error)
    assert error.__notes__ == ["Raised by badge 'monthly' on event 'contributed'."]
    with pytest.raises(InvalidStateError, match="would expire after the year 9999"):
        await rules.grant("ana", "monthly", force_timestamp=late)
    assert await rules.history() == []


# temporary ----------------------------------------------------------------------------------


async def test_a_temporary_badge_follows_what_award_gives_now(rules: BadgeRegistry) -> None:
    announced = Announced(rules)
    await rules.possibly_award_badge("voted", user="ana", karma=10)
    await rules.possibly_award_badge("voted", user="ana", karma=35)
    assert await levels(rules, "ana", "karma") == [1, 3]  # Levels accumulate, as usual.
    announced.take()

    assert await rules.possibly_award_badge("voted", user="ana", karma=12) == []
    assert await levels(rules, "ana", "karma") == [1]
    assert announced.take() == ([], [("karma", 3)])
    assert await rules.possibly_award_badge("voted", user="ana", karma=3) == []
    assert await levels(rules, "ana", "karma") == []
    assert announced.take() == ([], [("karma", 1)])
    # Nothing held: nothing to revoke, no row.
    assert await rules.possibly_award_badge("voted", user="ana", karma=0) == []
    assert changes(await rules.history("ana"))[:2] == [
        (
            "revoked",
            "ana",
            "karma",
            1,
            "event",
            None,
            "Temporary badge: award() now gives no level.",
        ),
        (
            "revoked",
            "ana",
            "karma",
            3,
            "event",
            None,
            "Temporary badge: award() now gives level 1.",
        ),
    ]
    assert len(await rules.history("ana")) == 4


async def test_a_grant_of_a_temporary_badge_revokes_nothing(rules: BadgeRegistry) -> None:
    await rules.possibly_award_badge("voted", user="ana", karma=30)
    granted = await rules.grant("ana", "karma", 1, by="mod:7")
    assert granted is not None and granted.source == "manual"
    assert await levels(rules, "ana", "karma") == [1, 3]
    assert await rules.grant("ana", "karma", 1) is None  # Held already.


# replaces_lower -----------------------------------------------------------------------------


async def test_a_higher_level_replaces_the_lower_ones(rules: BadgeRegistry) -> None:
    announced = Announced(rules)
    [one] = await rules.possibly_award_badge("climbed", user="ana", level=1)
    [three] = await rules.possibly_award_badge("climbed", user="ana", level=3)
    assert await rules.awards_for("ana") == [three]
    assert announced.take() == ([("ladder", 1), ("ladder", 3)], [("ladder", 1)])
    # A lower level than one held is not recorded, earned or granted; the level held stays.
    assert await rules.possibly_award_badge("climbed", user="ana", level=2) == []
    assert await rules.grant("ana", "ladder", 1) is None
    assert await rules.possibly_award_badge("climbed", user="ana", level=3) == []
    assert announced.take() == ([], [])
    assert changes(await rules.history("ana")) == [
        ("granted", "ana", "ladder", 3, "event", None, None),
        ("replaced", "ana", "ladder", 1, "event", None, "Replaced by level 3."),
        ("granted", "ana", "ladder", 1, "event", None, None),
    ]
    assert one.id != three.id


async def test_replaces_lower_tidies_lower_levels_held_from_before(
    rules: BadgeRegistry,
) -> None:
    """Levels held before the badge set `replaces_lower` go when it is next evaluated."""
    held = BadgeRegistry()
    held.configure(database_url=rules.settings.database_url)

    class Accumulating(LadderBadge):
        replaces_lower = False

    held.register(Accumulating)
    async with held.lifespan():
        for level in (1, 2):
            await held.possibly_award_badge("climbed", user="ana", level=level)
    assert await levels(rules, "ana", "ladder") == [1, 2]
    assert await rules.possibly_award_badge("climbed", user="ana", level=1) == []
    assert await levels(rules, "ana", "ladder") == [2]
    [change] = [c for c in await rules.history("ana") if c.action == "replaced"]
    assert (change.level, change.reason) == (1, "Replaced by level 2.")


async def test_temporary_and_replaces_lower_hold_exactly_the_level_given(
    rules: BadgeRegistry,
) -> None:
    for level, held in ((1, [1]), (3, [3]), (2, [2]), (0, []), (2, [2])):
        await rules.possibly_award_badge("ranked-now", user="ana", level=level)
        assert await levels(rules, "ana", "rank-now") == held
    actions = [(c.action, c.level, c.reason) for c in await rules.history("ana")]
    assert actions == [
        ("granted", 2, None),
        ("revoked", 2, "Temporary badge: award() now gives no level."),
        ("granted", 2, None),
        ("revoked", 3, "Temporary badge: award() now gives level 2."),
        ("granted", 3, None),
        ("replaced", 1, "Replaced by level 3."),
        ("granted", 1, None),
    ]


async def test_an_expired_level_of_a_settling_badge_is_moved_and_earned_again(
    rules: BadgeRegistry,
) -> None:
    class ExpiringLadder(LadderBadge):
        slug = "expiring-ladder"
        events = ["climbed-expiring"]
        expires_after = DAY

    rules.register(ExpiringLadder)
    old = now() - 2 * DAY
    await rules.possibly_award_badge("climbed-expiring", user="ana", level=2, force_timestamp=old)
    [again] = await rules.possibly_award_badge("climbed-expiring", user="ana", level=1)
    assert await rules.awards_for("ana") == [again]
    assert [(c.action, c.level) for c in await rules.history("ana")] == [
        ("granted", 1),
        ("expired", 2),
        ("granted", 2),
    ]


async def test_a_settlement_that_fails_is_reported_with_its_badge(
    tmp_path: pathlib.Path,
) -> None:
    """On a database without the tables, the settlement's error is raised by grant(), and put
    in the event's BadgeErrorGroup with its badge's note."""
    registry = BadgeRegistry()
    registry.configure(database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    registry.register(LadderBadge)
    async with registry.lifespan():
        with pytest.raises(SchemaError, match="does not exist"):
            await registry.grant("ana", "ladder", 1)
        with pytest.raises(BadgeErrorGroup) as caught:
            await registry.possibly_award_badge("climbed", user="ana", level=1)
    [error] = caught.value.exceptions
    assert isinstance(error, SchemaError)
    assert error.__notes__ == ["Raised by badge 'ladder' on event 'climbed'."]
