from __future__ import annotations

import dataclasses
import datetime
import logging
import pathlib
import random
import uuid
from typing import Any

import anyio
import pytest

from abadges import (
    Award,
    Badge,
    BadgeAwarded,
    BadgeDetail,
    BadgeErrorGroup,
    BadgeRegistry,
    ConfigurationError,
    InvalidAwardError,
    InvalidLevelError,
    InvalidStateError,
    NotConnectedError,
)
from tests.support import Rows, only_error

UTC = datetime.UTC


@dataclasses.dataclass
class User:
    id: int
    points: int = 0


class PointsBadge(Badge):
    """The three-level badge of brabeion's usage page, with an async award()."""

    slug = "points"
    levels = ["Bronze", "Silver", BadgeDetail("Gold", "Over 10,000 points")]
    events = ["points_awarded"]
    multiple = False

    async def award(self, **state: Any) -> BadgeAwarded | None:
        await anyio.lowlevel.checkpoint()
        points = state["user"].points
        if points > 10000:
            return BadgeAwarded(level=3)
        elif points > 7500:
            return BadgeAwarded(level=2)
        elif points > 5000:
            return BadgeAwarded(level=1)
        return None


class VisitBadge(Badge):
    """A plain-method badge that may be held many times."""

    slug = "visit"
    levels = ["Visitor"]
    events = ["visited"]
    multiple = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class RaisingBadge(Badge):
    slug = "raising"
    levels = ["Never"]
    events = ["points_awarded"]

    def award(self, **state: Any) -> None:
        raise KeyError("profile")


def recording_badge(seen: list[dict[str, Any]]) -> type[Badge]:
    """A VisitBadge that appends the state each award() call gets to `seen`."""

    class Recording(VisitBadge):
        def award(self, **state: Any) -> BadgeAwarded:
            seen.append(state)
            return BadgeAwarded()

    return Recording


def badge_returning(slug: str, result: object, levels: int = 3) -> type[Badge]:
    return type(
        f"{slug.title()}Badge",
        (Badge,),
        {
            "slug": slug,
            "levels": [f"L{n}" for n in range(1, levels + 1)],
            "events": ["points_awarded"],
            "award": lambda self, **state: result,
        },
    )


async def test_brabeion_points_badge(registry: BadgeRegistry, stored_rows: Rows) -> None:
    registry.register(PointsBadge)
    user = User(id=7)

    assert await registry.possibly_award_badge("points_awarded", user=user) == []

    user.points = 5001
    [bronze] = await registry.possibly_award_badge("points_awarded", user=user)
    assert (bronze.user_id, bronze.slug, bronze.level, bronze.name) == ("7", "points", 1, "Bronze")
    assert bronze.awarded_at.tzinfo is UTC
    assert await registry.possibly_award_badge("points_awarded", user=user) == []

    user.points = 7501
    [silver] = await registry.possibly_award_badge("points_awarded", user=user)
    assert silver.level == 2

    user.points = 10001
    [gold] = await registry.possibly_award_badge("points_awarded", user=user)
    assert (gold.level, gold.name, gold.description) == (3, "Gold", "Over 10,000 points")

    assert await stored_rows() == [("7", "points", 1), ("7", "points", 2), ("7", "points", 3)]
    assert [a.level for a in await registry.awards_for(user)] == [3, 2, 1]


async def test_multiple_badge_awards_once_per_event(
    registry: BadgeRegistry, stored_rows: Rows
) -> None:
    registry.register(VisitBadge)
    first = await registry.possibly_award_badge("visited", user="ana")
    second = await registry.possibly_award_badge("visited", user="ana")
    assert len(first) == len(second) == 1
    assert first[0].id != second[0].id
    assert await stored_rows() == [("ana", "visit", 1), ("ana", "visit", 1)]


async def test_an_event_key_makes_a_retried_call_record_nothing_twice(
    registry: BadgeRegistry, stored_rows: Rows
) -> None:
    registry.register(VisitBadge)
    registry.register(PointsBadge)
    user = User(id=7, points=5001)
    first = await registry.possibly_award_badge("visited", user="ana", event_key="req-1")
    assert [award.slug for award in first] == ["visit"]
    # The call is retried, say after a timeout whose outcome it could not know: nothing new.
    assert await registry.possibly_award_badge("visited", user="ana", event_key="req-1") == []
    # Another occurrence, or the same key for another user or event, is an award of its own.
    assert len(await registry.possibly_award_badge("visited", user="ana", event_key="req-2")) == 1
    assert len(await registry.possibly_award_badge("visited", user="bob", event_key="req-1")) == 1
    [bronze] = await registry.possibly_award_badge("points_awarded", user=user, event_key="req-1")
    assert bronze.slug == "points"
    assert await stored_rows() == [
        ("ana", "visit", 1),
        ("ana", "visit", 1),
        ("bob", "visit", 1),
        ("7", "points", 1),
    ]


async def test_unknown_event_is_a_no_op(
    registry: BadgeRegistry, stored_rows: Rows, caplog: pytest.LogCaptureFixture
) -> None:
    registry.register(VisitBadge)
    with caplog.at_level(logging.DEBUG, logger="abadges"):
        assert await registry.possibly_award_badge("no_such_event", user="ana") == []
    assert "No badge listens to event 'no_such_event'." in caplog.messages
    assert await stored_rows() == []


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (BadgeAwarded(level=4), InvalidLevelError),
        (BadgeAwarded(), InvalidLevelError),
        ("gold", InvalidAwardError),
    ],
)
async def test_bad_award_records_nothing(
    registry: BadgeRegistry, stored_rows: Rows, result: object, error: type[Exception]
) -> None:
    registry.register(badge_returning("broken", result))
    with pytest.raises(BadgeErrorGroup) as caught:
        await registry.possibly_award_badge("points_awarded", user=User(id=1))
    raised = only_error(caught, error)
    assert str(raised).startswith("Badge 'broken'")
    assert raised.__notes__ == ["Raised by badge 'broken' on event 'points_awarded'."]
    assert caught.value.recorded == []
    assert await stored_rows() == []


HOUR_EAST = datetime.timezone(datetime.timedelta(hours=1))
HOUR_WEST = datetime.timezone(datetime.timedelta(hours=-1))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({}, "possibly_award_badge('visited') needs a 'user' in its state; got []."),
        (
            {"member": 1},
            "possibly_award_badge('visited') needs a 'user' in its state; got ['member'].",
        ),
        ({"user": None}, "The user None has no usable identity: user_id() gave None"),
        ({"user": True}, "The user True has no usable identity"),
        ({"user": ""}, "The user identity '' is not storable"),
        ({"user": "x" * 256}, "The user identity 'xxxxx"),
        ({"user": "a\x00b"}, "The user identity 'a\\x00b' is not storable"),
        ({"user": "\ud800"}, "The user identity '\\ud800' is not storable"),
        (
            {"user": "ana", "force_timestamp": datetime.datetime(2024, 5, 1)},
            "force_timestamp must be a timezone-aware datetime; "
            "got datetime.datetime(2024, 5, 1, 0, 0).",
        ),
        (
            {"user": "ana", "force_timestamp": datetime.date(2024, 5, 1)},
            "force_timestamp must be a timezone-aware datetime",
        ),
        (
            {"user": "ana", "event_key": 42},
            "event_key must be a str of 1 to 255 characters naming this occurrence of event "
            "'visited', such as a request or order id; got 42.",
        ),
        ({"user": "ana", "event_key": ""}, "event_key must be a str of 1 to 255 characters"),
        ({"user": "ana", "event_key": "k" * 256}, "event_key must be a str of 1 to 255"),
        ({"user": 10**5000}, "The user identity is an int of over 4,300 digits; an identity has"),
        (
            {"user": "ana", "force_timestamp": datetime.datetime.min.replace(tzinfo=HOUR_EAST)},
            "force_timestamp datetime.datetime(1, 1, 1, 0, 0, tzinfo=datetime.timezone(",
        ),
        (
            {"user": "ana", "force_timestamp": datetime.datetime.max.replace(tzinfo=HOUR_WEST)},
            "force_timestamp datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=",
        ),
    ],
)
async def test_unusable_state_records_nothing(
    registry: BadgeRegistry, stored_rows: Rows, state: dict[str, Any], message: str
) -> None:
    calls: list[dict[str, Any]] = []
    registry.register(recording_badge(calls))
    with pytest.raises(InvalidStateError) as caught:
        await registry.possibly_award_badge("visited", **state)
    assert str(caught.value).startswith(message)
    assert calls == []
    assert await stored_rows() == []


async def test_a_raising_badge_does_not_stop_the_others(
    registry: BadgeRegistry, stored_rows: Rows
) -> None:
    registry.register(RaisingBadge)
    registry.register(PointsBadge)
    seen: list[Award] = []
    registry.on_award(seen.append)

    with pytest.raises(BadgeErrorGroup) as caught:
        await registry.possibly_award_badge("points_awarded", user=User(id=3, points=6000))
    assert str(caught.value) == "1 badge failed on event 'points_awarded' (1 sub-exception)"
    error = only_error(caught, KeyError)
    assert error.__notes__ == ["Raised by badge 'raising' on event 'points_awarded'."]
    assert [award.slug for award in caught.value.recorded] == ["points"]
    assert await stored_rows() == [("3", "points", 1)]
    assert [award.slug for award in seen] == ["points"]


async def test_several_raising_badges_raise_a_group(
    registry: BadgeRegistry, stored_rows: Rows
) -> None:
    registry.register(RaisingBadge)
    registry.register(badge_returning("broken", BadgeAwarded(level=9)))
    registry.register(PointsBadge)
    with pytest.raises(BadgeErrorGroup) as caught:
        await registry.possibly_award_badge("points_awarded", user=User(id=3, points=9000))
    assert str(caught.value) == "2 badges failed on event 'points_awarded' (2 sub-exceptions)"
    assert [type(exc) for exc in caught.value.exceptions] == [KeyError, InvalidLevelError]
    assert await stored_rows() == [("3", "points", 2)]


async def test_force_timestamp_sets_awarded_at(registry: BadgeRegistry) -> None:
    registry.register(VisitBadge)
    when = datetime.datetime(
        2021, 3, 4, 5, 6, 7, 891011, tzinfo=datetime.timezone(-datetime.timedelta(hours=5))
    )
    [award] = await registry.possibly_award_badge("visited", user="ana", force_timestamp=when)
    assert award.awarded_at == when
    assert award.awarded_at.tzinfo is UTC
    [stored] = await registry.awards_for("ana")
    assert stored == award


async def test_badges_do_not_see_force_timestamp(registry: BadgeRegistry) -> None:
    seen: list[dict[str, Any]] = []
    registry.register(recording_badge(seen))
    when = datetime.datetime(2021, 1, 1, tzinfo=UTC)
    await registry.possibly_award_badge("visited", user="ana", page=3, force_timestamp=when)
    assert seen == [{"user": "ana", "page": 3}]


async def test_on_award_sync_and_async_once_per_new_award(
    registry: BadgeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    registry.register(PointsBadge)
    plain: list[tuple[str, int]] = []
    awaited: list[tuple[str, int]] = []

    @registry.on_award
    def failing(award: Award) -> None:
        raise RuntimeError("mailer down")

    registry.on_award(lambda award: plain.append((award.user_id, award.level)))

    @registry.on_award
    async def notify(award: Award) -> None:
        await anyio.lowlevel.checkpoint()
        awaited.append((award.user_id, award.level))

    user = User(id=5, points=7600)
    with caplog.at_level(logging.ERROR, logger="abadges"):
        await registry.possibly_award_badge("points_awarded", user=user)
        await registry.possibly_award_badge("points_awarded", user=user)
    assert plain == awaited == [("5", 2)]
    assert [record.getMessage() for record in caplog.records] == [
        f"on_award callback {failing!r} failed for badge 'points' level 2 of user '5'."
    ]
    assert await registry.has_badge(user, "points", level=2)


@pytest.mark.parametrize(
    ("user", "stored"),
    [
        (User(id=42), "42"),
        ("ana", "ana"),
        (17, "17"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ("Zoë 🦊 ' OR 1=1 --", "Zoë 🦊 ' OR 1=1 --"),
        ("u" * 255, "u" * 255),
        ("🦊" * 255, "🦊" * 255),
    ],
)
async def test_user_identity(registry: BadgeRegistry, user: object, stored: str) -> None:
    registry.register(VisitBadge)
    [award] = await registry.possibly_award_badge("visited", user=user)
    assert award.user_id == stored
    assert [a.id for a in await registry.awards_for(stored)] == [award.id]


async def test_longest_slug_and_identity_fit_in_four_byte_characters(
    registry: BadgeRegistry, stored_rows: Rows
) -> None:
    slug = "🏅" * 100
    registry.register(badge_returning(slug, BadgeAwarded(), levels=1))
    await registry.possibly_award_badge("points_awarded", user="🦊" * 255)
    assert await stored_rows() == [("🦊" * 255, slug, 1)]
    assert await registry.award_counts() == {slug: {1: 1}}


async def test_identities_differ_by_case_and_trailing_space(
    registry: BadgeRegistry, stored_rows: Rows
) -> None:
    registry.register(badge_returning("once", BadgeAwarded(), levels=1))
    for user in ["bob", "Bob", "bob ", "böb", "bob"]:
        await registry.possibly_award_badge("points_awarded", user=user)
    assert sorted(await stored_rows()) == sorted(
        [("bob", "once", 1), ("Bob", "once", 1), ("bob ", "once", 1), ("böb", "once", 1)]
    )
    assert await registry.badge_count("bob ") == 1


async def test_configured_user_id(database_url: str) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, user_id=lambda user: user["email"])
    registry.register(VisitBadge)
    async with registry.lifespan():
        await registry.create_tables()
        [award] = await registry.possibly_award_badge("visited", user={"email": "a@example.org"})
        assert award.user_id == "a@example.org"
        await registry.revoke("a@example.org", "visit")


async def test_calls_before_connect_say_how_to_connect() -> None:
    registry = BadgeRegistry()
    registry.register(VisitBadge)
    with pytest.raises(NotConnectedError, match=r"await badges.connect\(\)"):
        await registry.possibly_award_badge("visited", user="ana")
    with pytest.raises(NotConnectedError):
        await registry.awards_for("ana")
    with pytest.raises(NotConnectedError):
        registry.database  # noqa: B018


async def test_the_database_is_the_connection_abadges_holds(registry: BadgeRegistry) -> None:
    registry.register(VisitBadge)
    await registry.possibly_award_badge("visited", user="ana")
    assert registry.database.is_connected
    assert await registry.database.fetch_val("SELECT count(*) FROM abadges_awards") == 1


async def test_configure_refuses_unknown_settings_and_a_live_connection(
    registry: BadgeRegistry,
) -> None:
    with pytest.raises(ConfigurationError, match=r"disconnect first"):
        registry.configure(database_url="sqlite+aiosqlite:///other.sqlite3")
    await registry.disconnect()
    with pytest.raises(ConfigurationError) as caught:
        registry.configure(databse_url="sqlite://")
    assert str(caught.value) == (
        "configure() got unknown setting(s) ['databse_url']; "
        "the settings are ['badges', 'database_url', 'notices', 'notices_maxlen', "
        "'notices_stream', 'openbadges', 'queue', 'queue_name', 'redis_url', 'user_id', "
        "'user_loader']."
    )


# configured(): settings for the length of a block ---------------------------------------------


async def test_configured_restores_the_settings_before_it(tmp_path: pathlib.Path) -> None:
    registry = BadgeRegistry()
    registry.configure(queue_name="app:queue")
    before = registry.settings
    url = f"sqlite+aiosqlite:///{tmp_path / 'scratch.sqlite3'}"
    with registry.configured(database_url=url, queue="inline") as configured:
        assert configured is registry
        assert (registry.settings.database_url, registry.settings.queue) == (url, "inline")
        assert registry.settings.queue_name == "app:queue"  # Earlier settings still apply.
        with registry.configured(queue_name="inner"):
            assert registry.settings.queue_name == "inner"
        assert registry.settings.queue_name == "app:queue"
        async with registry.lifespan():
            await registry.migrate()
            assert registry.settings.database_url == url
    assert registry.settings == before
    with pytest.raises(KeyError), registry.configured(queue="inline"):
        raise KeyError("boom")
    assert registry.settings == before


async def test_configured_refuses_what_configure_refuses_and_changes_nothing(
    tmp_path: pathlib.Path,
) -> None:
    registry = BadgeRegistry()
    before = registry.settings
    with pytest.raises(ConfigurationError, match=r"unknown setting\(s\) \['databse_url'\]"):
        with registry.configured(databse_url="sqlite://"):
            pass
    assert registry.settings == before
    registry.configure(database_url=f"sqlite+aiosqlite:///{tmp_path / 'app.sqlite3'}")
    async with registry.lifespan():
        with pytest.raises(ConfigurationError, match=r"disconnect first"):
            with registry.configured(queue="inline"):
                pass
    assert registry.settings.queue == "redis"


async def test_a_connection_left_open_keeps_its_settings_until_it_closes(
    tmp_path: pathlib.Path,
) -> None:
    registry = BadgeRegistry()
    before = registry.settings
    url = f"sqlite+aiosqlite:///{tmp_path / 'scratch.sqlite3'}"
    with registry.configured(database_url=url):
        await registry.connect()
    try:
        assert registry.settings.database_url == url
    finally:
        await registry.disconnect()
    assert registry.settings == before


async def test_a_cancelled_call_never_commits_an_award_it_does_not_announce(
    registry: BadgeRegistry,
) -> None:
    # What request timeouts and clients that go away do: calls cancelled at random points.
    @registry.register
    class SlowVisitBadge(VisitBadge):
        async def award(self, **state: Any) -> BadgeAwarded:  # type: ignore[override]
            await anyio.sleep(0.001)
            return BadgeAwarded()

    announced: list[int] = []

    @registry.on_award
    async def announce(award: Award) -> None:
        await anyio.lowlevel.checkpoint()
        announced.append(award.id)

    randomness = random.Random(7)
    for _ in range(300):
        with anyio.move_on_after(randomness.uniform(0, 0.003)):
            await registry.possibly_award_badge("visited", user="ana")
    stored = [award.id for award in await registry.holders("visit", limit=1000)]
    assert 0 < len(stored) < 300  # Some calls were cut short before recording, some not.
    assert sorted(announced) == sorted(stored)
