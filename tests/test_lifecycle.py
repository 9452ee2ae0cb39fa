"""The award lifecycle: grants by hand, revokes with a reason, the history, on_revoke; on
every database."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from abadges import (
    Award,
    AwardChange,
    BadgeNotRegisteredError,
    BadgeRegistry,
    InvalidLevelError,
    InvalidStateError,
)
from tests.support import Rows
from tests.support.badges import RankBadge, ThanksBadge
from tests.support.deferred_badges import VisitorBadge

UTC = datetime.UTC
START = datetime.datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
async def lifecycle(registry: BadgeRegistry) -> AsyncIterator[BadgeRegistry]:
    """The `registry` fixture's database, with deferred badges run in-process."""
    await registry.disconnect()
    registry.configure(queue="inline")
    for badge in (RankBadge, ThanksBadge, VisitorBadge):
        registry.register(badge)
    async with registry.lifespan():
        yield registry


def changes(found: list[AwardChange]) -> list[tuple[Any, ...]]:
    return [(c.action, c.user_id, c.slug, c.level, c.source, c.by, c.reason) for c in found]


async def test_grant_records_a_manual_award_with_its_provenance(lifecycle: BadgeRegistry) -> None:
    announced: list[Award] = []
    lifecycle.on_award(announced.append)
    award = await lifecycle.grant(
        "ana", "rank", 2, by="mod:7", reason="Helped at the meetup", force_timestamp=START
    )
    assert award is not None
    assert (award.slug, award.level, award.name, award.awarded_at) == ("rank", 2, "Silver", START)
    assert (award.source, award.granted_by, award.reason) == (
        "manual",
        "mod:7",
        "Helped at the meetup",
    )
    assert announced == [award]
    assert await lifecycle.awards_for("ana") == [award]
    # Held already: nothing, and nothing announced.
    assert await lifecycle.grant("ana", "rank", 2) is None
    assert announced == [award]
    # A multiple badge gets a new award for each grant; its only level needs no number.
    first, second = [await lifecycle.grant("ana", "thanks") for _ in range(2)]
    assert first is not None and second is not None and first.id != second.id
    assert await lifecycle.badge_count("ana") == 3
    [change] = await lifecycle.history("ana", "rank")
    assert (change.action, change.at, change.by, change.reason, change.source) == (
        "granted",
        START,
        "mod:7",
        "Helped at the meetup",
        "manual",
    )


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.grant("ana", "rank", 4), InvalidLevelError, "level 4 is out of range"),
        (lambda r: r.grant("ana", "rank"), InvalidLevelError, "has 3 levels"),
        (lambda r: r.grant("ana", "rnak", 1), BadgeNotRegisteredError, "No badge with slug"),
        (
            lambda r: r.grant("ana", "rank", 1, force_timestamp=datetime.datetime(2024, 1, 1)),
            InvalidStateError,
            "force_timestamp must be a timezone-aware datetime",
        ),
        (lambda r: r.grant("ana", "rank", 1, by=""), ValueError, "by must be None or a str"),
        (
            lambda r: r.grant("ana", "rank", 1, reason="x" * 1001),
            ValueError,
            "reason must be None or a str of 1 to 1000 characters",
        ),
        (lambda r: r.revoke("ana", "rank", by=7), ValueError, "by must be None or a str"),
        (lambda r: r.revoke("ana", "rank", 9), InvalidLevelError, "level 9 is out of range"),
        (lambda r: r.history("ana", limit=-1), ValueError, r"history\(\) limit must be"),
        (lambda r: r.history(slug=["rank"]), ValueError, r"history\(\) slug must be None or a str"),
    ],
)
async def test_bad_input_is_refused_and_writes_nothing(
    lifecycle: BadgeRegistry, stored_rows: Rows, call: Any, error: type[Exception], message: str
) -> None:
    await lifecycle.grant("ana", "rank", 1)
    with pytest.raises(error, match=message):
        await call(lifecycle)
    assert await stored_rows() == [("ana", "rank", 1)]
    assert changes(await lifecycle.history()) == [
        ("granted", "ana", "rank", 1, "manual", None, None)
    ]


async def test_revoke_writes_the_history_and_calls_on_revoke(lifecycle: BadgeRegistry) -> None:
    ended: list[Award] = []
    lifecycle.on_revoke(ended.append)
    [bronze] = await lifecycle.possibly_award_badge(
        "ranked", user="ana", level=1, force_timestamp=START
    )
    [gold] = await lifecycle.possibly_award_badge("ranked", user="ana", level=3)
    await lifecycle.possibly_award_badge("thanked", user="ana", event_key="order-1")
    assert await lifecycle.revoke("ana", "rank", by="mod:7", reason="Sock puppet") == 2
    assert sorted(ended, key=lambda a: a.level) == [bronze, gold]
    assert [a.slug for a in await lifecycle.awards_for("ana")] == ["thanks"]
    assert await lifecycle.revoke("ana", "thanks", reason="Refunded") == 1
    assert await lifecycle.revoke("ana", "thanks") == 0  # Nothing held: no row, no callback.
    assert len(ended) == 3
    history = await lifecycle.history("ana")
    # Newest first; the two revoked at once in the order of their rows.
    assert changes(history) == [
        ("revoked", "ana", "thanks", 1, "event", None, "Refunded"),
        ("revoked", "ana", "rank", 3, "event", "mod:7", "Sock puppet"),
        ("revoked", "ana", "rank", 1, "event", "mod:7", "Sock puppet"),
        ("granted", "ana", "thanks", 1, "event", None, None),
        ("granted", "ana", "rank", 3, "event", None, None),
        ("granted", "ana", "rank", 1, "event", None, None),
    ]
    assert history[-1].at == START
    # Pages, and one badge's history.
    assert await lifecycle.history("ana", limit=2, offset=1) == history[1:3]
    thanks = [c for c in changes(history) if c[2] == "thanks"]
    assert changes(await lifecycle.history(slug="thanks")) == thanks
    assert await lifecycle.history("bo") == []


async def test_deferred_awards_are_marked_as_such(lifecycle: BadgeRegistry) -> None:
    [award] = await lifecycle.possibly_award_badge("visited", user="ana")
    assert (award.slug, award.source) == ("visitor", "deferred")
    assert [a.source for a in await lifecycle.awards_for("ana")] == ["deferred"]
    assert changes(await lifecycle.history()) == [
        ("granted", "ana", "visitor", 1, "deferred", None, None)
    ]


async def test_the_history_is_in_the_order_of_the_changes(lifecycle: BadgeRegistry) -> None:
    """Not in the order of `at`: a grant dated in the past, after a revoke, is the newest."""
    first = await lifecycle.grant("ana", "rank", 1, force_timestamp=START)
    assert await lifecycle.revoke("ana", "rank", reason="Mistake") == 1
    again = await lifecycle.grant("ana", "rank", 1, force_timestamp=START)
    assert first is not None and again is not None
    # The id of a deleted last row is not given again (SQLite's AUTOINCREMENT).
    assert again.id > first.id
    assert [c.action for c in await lifecycle.history("ana")] == ["granted", "revoked", "granted"]
    assert await lifecycle.has_badge("ana", "rank", 1)
