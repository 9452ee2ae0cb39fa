from __future__ import annotations

import datetime
import sqlite3
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from abadges import (
    BadgeNotRegisteredError,
    BadgeRegistry,
    ConfigurationError,
    InvalidLevelError,
    NotConnectedError,
    is_transient,
)
from abadges.storage import open_store
from abadges.storage.base import Written
from abadges.tables import awards, metadata
from tests.support.badges import RankBadge, ThanksBadge

DAY = datetime.timedelta(days=1)
START = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
async def populated(registry: BadgeRegistry) -> BadgeRegistry:
    """ana: rank 1 (day 0), thanks (day 1), rank 3 (day 2), thanks (day 3); bo: rank 1 (day 4)."""
    registry.register(RankBadge)
    registry.register(ThanksBadge)
    events: list[tuple[str, str, dict[str, Any]]] = [
        ("ranked", "ana", {"level": 1}),
        ("thanked", "ana", {}),
        ("ranked", "ana", {"level": 3}),
        ("thanked", "ana", {}),
        ("ranked", "bo", {"level": 1}),
    ]
    for day, (event, user, state) in enumerate(events):
        await registry.possibly_award_badge(
            event, user=user, force_timestamp=START + day * DAY, **state
        )
    return registry


async def test_awards_for_newest_first(populated: BadgeRegistry) -> None:
    found = [(a.slug, a.level, a.name, a.awarded_at) for a in await populated.awards_for("ana")]
    assert found == [
        ("thanks", 1, "Thanked", START + 3 * DAY),
        ("rank", 3, "Gold", START + 2 * DAY),
        ("thanks", 1, "Thanked", START + DAY),
        ("rank", 1, "Bronze", START),
    ]
    assert await populated.awards_for("nobody") == []


async def test_badge_count_and_has_badge(populated: BadgeRegistry) -> None:
    assert await populated.badge_count("ana") == 4
    assert await populated.badge_count("bo") == 1
    assert await populated.badge_count("nobody") == 0
    assert await populated.has_badge("ana", "rank")
    assert await populated.has_badge("ana", "rank", level=3)
    assert not await populated.has_badge("ana", "rank", level=2)
    assert not await populated.has_badge("bo", "thanks")


async def test_holders_newest_first_in_pages(populated: BadgeRegistry) -> None:
    holders = await populated.holders("rank")
    assert [(a.user_id, a.level) for a in holders] == [("bo", 1), ("ana", 3), ("ana", 1)]
    bronze = await populated.holders("rank", level=1)
    assert [(a.user_id, a.awarded_at) for a in bronze] == [("bo", START + 4 * DAY), ("ana", START)]
    assert await populated.holders("rank", limit=2, offset=1) == holders[1:3]
    assert await populated.holders("rank", limit=1, offset=2) == holders[2:]
    assert await populated.holders("rank", limit=0) == []
    assert await populated.holders("rank", level=2) == []


async def test_award_counts_include_levels_never_awarded(populated: BadgeRegistry) -> None:
    assert await populated.award_counts() == {"rank": {1: 2, 2: 0, 3: 1}, "thanks": {1: 2}}


async def test_revoke(populated: BadgeRegistry) -> None:
    assert await populated.revoke("ana", "rank", level=2) == 0
    assert await populated.revoke("ana", "rank", level=3) == 1
    assert await populated.has_badge("ana", "rank", level=1)
    assert await populated.revoke("ana", "thanks") == 2
    assert await populated.revoke("ana", "thanks") == 0
    assert [a.slug for a in await populated.awards_for("ana")] == ["rank"]
    assert await populated.badge_count("bo") == 1
    # A revoked non-multiple level can be earned again.
    assert len(await populated.possibly_award_badge("ranked", user="ana", level=3)) == 1


async def test_the_largest_limit_and_offset_work(registry: BadgeRegistry) -> None:
    registry.register(RankBadge)
    await registry.possibly_award_badge("ranked", user="ana", level=1)
    largest = 2**63 - 1
    assert len(await registry.holders("rank", limit=largest)) == 1
    assert await registry.holders("rank", offset=largest) == []


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda r: r.has_badge("ana", "rnak"),
            BadgeNotRegisteredError,
            "No badge with slug 'rnak' is registered",
        ),
        (lambda r: r.holders("rank", level=4), InvalidLevelError, "level 4 is out of range"),
        (lambda r: r.revoke("ana", "rank", level=0), InvalidLevelError, "level 0 is out of range"),
        (
            lambda r: r.holders("rank", limit=-1),
            ValueError,
            "limit must be a whole number from 0 to 9223372036854775807",
        ),
        (lambda r: r.holders("rank", offset="2"), ValueError, "offset must be a whole number"),
        (lambda r: r.holders("rank", limit=2**63), ValueError, "to 9223372036854775807; got 92"),
        (lambda r: r.holders("rank", offset=2**64), ValueError, "to 9223372036854775807; got 18"),
        (
            lambda r: r.holders(["rank"]),
            BadgeNotRegisteredError,
            "No badge with slug ['rank'] is registered",
        ),
        (
            lambda r: r.has_badge("ana", {"rank": 1}),
            BadgeNotRegisteredError,
            "No badge with slug {'rank': 1} is registered",
        ),
    ],
)
async def test_queries_refuse_unknown_badges_and_levels(
    populated: BadgeRegistry, call: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        await call(populated)
    assert message in str(caught.value)
    assert await populated.badge_count("ana") == 4


async def test_awards_of_unregistered_badges_have_no_name(
    populated: BadgeRegistry, database_url: str
) -> None:
    later = BadgeRegistry()
    later.configure(database_url=database_url)
    async with later.lifespan():
        [award] = await later.awards_for("bo")
    assert (award.slug, award.level, award.name, award.description) == ("rank", 1, None, None)


async def test_create_tables_is_idempotent(populated: BadgeRegistry) -> None:
    await populated.create_tables()
    await populated.create_tables()
    assert await populated.badge_count("ana") == 4


def test_metadata_describes_the_awards_table() -> None:
    assert list(metadata.tables) == [
        "abadges_awards",
        "abadges_history",
        "abadges_backfills",
        "abadges_totals",
        "abadges_level_counts",
    ]
    assert [c.name for c in awards.columns] == [
        "id",
        "user_id",
        "slug",
        "level",
        "awarded_at",
        "award_key",
        "revoked_at",
        "source",
        "granted_by",
        "reason",
        "expires_at",
        "points",
        "seen_at",
    ]
    [unique] = [
        c
        for c in awards.constraints
        if isinstance(c, sa.UniqueConstraint) and c.name == "abadges_awards_once"
    ]
    assert [c.name for c in unique.columns] == ["user_id", "slug", "level", "award_key"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mongodb://user:secret@host/db",
            "The database URL 'mongodb://user:********@host/db' is not supported",
        ),
        ("abadges.sqlite3", "The database URL 'abadges.sqlite3' is not supported"),
        # The PostgreSQL store inserts through asyncpg's own pool.
        (
            "postgresql+aiopg://user:secret@host/db",
            "The database URL 'postgresql+aiopg://user:********@host/db' is not supported",
        ),
        (
            "mysql+aiomysql://user:secret@host/db",
            "The database URL 'mysql+aiomysql://user:********@host/db' needs the driver "
            "'aiomysql', which is not installed: pip install 'abadges[mysql]'.",
        ),
    ],
)
def test_unusable_database_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_store(url, describe=lambda slug, level: None)
    assert str(caught.value).startswith(message)
    assert "secret" not in str(caught.value)


async def test_bad_url_fails_at_connect_and_leaves_the_registry_usable(tmp_path: Any) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url="mongodb://localhost/db")
    with pytest.raises(ConfigurationError):
        await registry.connect()
    registry.configure(database_url=f"sqlite+aiosqlite:///{tmp_path / 'ok.sqlite3'}")
    async with registry.lifespan() as connected:
        assert connected is registry
        await registry.create_tables()
        assert await registry.badge_count("ana") == 0


async def test_an_sqlite_file_that_cannot_be_opened_fails_at_connect(tmp_path: Any) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'a.sqlite3'}")
    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        await registry.connect()
    with pytest.raises(NotConnectedError):
        registry.database  # noqa: B018 - the property raises
    (tmp_path / "missing").mkdir()
    async with registry.lifespan():
        await registry.create_tables()
        assert await registry.badge_count("ana") == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_connection_its_server_ended_does_not_break_the_task(
    registry: BadgeRegistry, database_url: str
) -> None:
    """databases keeps a connection whose release failed (asyncpg's reset query, or its pool
    racing the server's goodbye) marked acquired, and every later query through it fails with
    "Connection is already acquired" (encode/databases#416): when it was the task's own, a
    long-lived task (a worker loop, a websocket) never recovered from a terminated
    PostgreSQL connection. Whether a release fails is a race this test does not force: CI saw
    "PoolConnectionHolder.release() called on a free connection holder" once."""
    store = registry._connected_store()
    admin = open_store(database_url, lambda slug, level: None)
    await admin.connect()
    try:
        for _ in range(5):
            try:
                async with store.connection() as connection:
                    pid = await connection.fetch_val(sa.text("SELECT pg_backend_pid()"))
                    await admin.database.execute(sa.text(f"SELECT pg_terminate_backend({pid})"))
            except Exception as exc:  # Giving the dead connection back may fail: transient.
                assert is_transient(exc), exc
            # The pool does not query a connection it takes back (storage.md): the one the
            # server ended may fail one more call, with an error worth retrying.
            try:
                await registry.badge_count("ana")
            except Exception as exc:
                assert is_transient(exc), exc
            assert await registry.badge_count("ana") == 0
    finally:
        await admin.disconnect()


async def test_an_empty_insert_records_nothing(registry: BadgeRegistry) -> None:
    assert await registry._connected_store().insert([]) == Written()


async def test_disconnecting_a_store_never_connected_does_nothing(database_url: str) -> None:
    store = open_store(database_url, lambda slug, level: None)
    await store.disconnect()
    assert not store.database.is_connected


@pytest.mark.parametrize("year", [1, 99, 999, 1000])
async def test_awards_of_any_year_read_back_in_order(registry: BadgeRegistry, year: int) -> None:
    registry.register(RankBadge)
    early = datetime.datetime(year, 1, 1, 8, 30, tzinfo=datetime.UTC)
    for level, at in [(1, START), (2, early), (3, START + DAY)]:
        await registry.possibly_award_badge("ranked", user="ana", level=level, force_timestamp=at)
    found = [(a.level, a.awarded_at) for a in await registry.awards_for("ana")]
    assert found == [(3, START + DAY), (1, START), (2, early)]
    assert [a.level for a in await registry.holders("rank")] == [3, 1, 2]


async def test_a_revoked_award_key_stays_revoked(registry: BadgeRegistry) -> None:
    registry.register(ThanksBadge)
    announced: list[str] = []
    registry.on_award(lambda award: announced.append(award.user_id))
    assert len(await registry.possibly_award_badge("thanked", user="ana", event_key="1")) == 1
    assert await registry.revoke("ana", "thanks") == 1
    # The same event again (a retry, a job run twice): nothing comes back, nothing announced.
    assert await registry.possibly_award_badge("thanked", user="ana", event_key="1") == []
    assert announced == ["ana"]
    assert not await registry.has_badge("ana", "thanks")
    assert (await registry.badge_count("ana"), await registry.awards_for("ana")) == (0, [])
    assert await registry.holders("thanks") == []
    assert await registry.award_counts() == {"thanks": {1: 0}}
    assert await registry.revoke("ana", "thanks") == 0
    # Another occurrence of the event awards again, and that award can be revoked in turn.
    [again] = await registry.possibly_award_badge("thanked", user="ana", event_key="2")
    assert await registry.awards_for("ana") == [again]
    assert await registry.revoke("ana", "thanks") == 1


async def test_revokes_racing_retries_of_the_same_event(registry: BadgeRegistry) -> None:
    """A retried event never brings back an award revoked before or while it runs."""
    registry.register(ThanksBadge)
    announced: list[int] = []
    registry.on_award(lambda award: announced.append(award.id))
    revoked = 0

    async def retry() -> None:
        await registry.possibly_award_badge("thanked", user="ana", event_key="1")

    async def revoke() -> None:
        nonlocal revoked
        count = await registry.revoke("ana", "thanks")
        revoked += count

    for _ in range(20):
        async with anyio.create_task_group() as group:
            for task in [retry] * 10 + [revoke] * 3:
                group.start_soon(task)
    assert len(announced) == 1
    assert revoked == 1
    assert not await registry.has_badge("ana", "thanks")
