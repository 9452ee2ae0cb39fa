"""Live notices and the unseen list: what is published to the Redis stream after each change,
on every path; what `subscribe()` gives, resumes and survives; and `unseen()`/`mark_seen()`,
on every database."""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest
import redis.asyncio

from abadges import (
    Award,
    AwardNotice,
    BadgeRegistry,
    ConfigurationError,
)
from abadges.notices import fields_of, notice_of
from abadges.queue import ENQUEUE_TIMEOUT
from abadges.storage.base import NewAward
from abadges.testing import RedisServer, free_port
from tests.support.badges import LadderBadge, RankBadge, ThanksBadge
from tests.support.deferred_badges import WeeklyBadge

UTC = datetime.UTC
START = datetime.datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def badges(registry: BadgeRegistry) -> BadgeRegistry:
    for badge_class in (RankBadge, ThanksBadge, LadderBadge, WeeklyBadge):
        registry.register(badge_class)
    return registry


async def stream_length(registry: BadgeRegistry) -> int:
    settings = registry.settings
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        return int(await client.xlen(settings.notices_stream))
    finally:
        await client.aclose()


async def collect(
    registry: BadgeRegistry, count: int, user: Any = None, last_id: str | None = "0-0"
) -> list[AwardNotice]:
    """The first `count` notices of the stream after `last_id`, within ten seconds."""
    found: list[AwardNotice] = []
    notices = registry.subscribe(user, last_id)
    try:
        with anyio.fail_after(10):
            async for notice in notices:
                found.append(notice)
                if len(found) == count:
                    break
    finally:
        await notices.aclose()
    return found


def changes(notices: list[AwardNotice]) -> list[tuple[str, str, str, int]]:
    return [(n.change, n.award.user_id, n.award.slug, n.award.level) for n in notices]


# The unseen list -----------------------------------------------------------------------------


async def test_awards_are_unseen_until_marked_seen(badges: BadgeRegistry) -> None:
    [rank] = await badges.possibly_award_badge("ranked", user="ana", level=1)
    thanks = await badges.grant("ana", "thanks")
    later = await badges.grant("ana", "rank", 2, force_timestamp=START)
    [bos] = await badges.possibly_award_badge("ranked", user="bo", level=3)
    assert thanks is not None and later is not None
    # Held and unseen, newest first; another user's are apart.
    assert await badges.unseen("ana") == [thanks, rank, later]
    assert await badges.unseen("bo") == [bos]
    # The ids given only; another user's award, an unknown id and one out of range are passed
    # over, and a repeated id counts once.
    assert await badges.mark_seen("ana", [rank.id, rank.id, bos.id, 10**9, 2**70, -1]) == 1
    assert await badges.unseen("ana") == [thanks, later]
    assert await badges.unseen("bo") == [bos]
    assert await badges.mark_seen("ana", []) == 0
    # A revoked award leaves the list; the others are all marked, once.
    assert await badges.revoke("ana", "rank", 2) == 1
    assert await badges.unseen("ana") == [thanks]
    assert await badges.mark_seen("ana") == 1
    assert await badges.mark_seen("ana") == 0
    assert await badges.unseen("ana") == []
    # Seen stays seen; a new award is unseen.
    assert await badges.awards_for("ana") == [thanks, rank]
    [new] = await badges.possibly_award_badge("ranked", user="ana", level=3)
    assert await badges.unseen("ana") == [new]


async def test_mark_seen_takes_many_ids_in_one_go(badges: BadgeRegistry) -> None:
    store = badges._connected_store()
    written = await store.insert([NewAward("ana", "thanks", 1, START, f"k{n}") for n in range(700)])
    ids = [award.id for award in written.recorded]
    assert await badges.mark_seen("ana", iter(ids[:650])) == 650
    assert [award.id for award in await badges.unseen("ana")] == sorted(ids[650:], reverse=True)


@pytest.mark.parametrize(
    ("ids", "named"),
    [
        ("12", "'12'"),
        (b"12", "b'12'"),
        (12, "12"),
        ({1: 2}, "{1: 2}"),
        ([1, "2"], "'2'"),
        ([1, True], "True"),
        ([1, 2.0], "2.0"),
    ],
)
async def test_mark_seen_refuses_ids_that_are_not_award_ids(
    badges: BadgeRegistry, ids: Any, named: str
) -> None:
    [award] = await badges.possibly_award_badge("ranked", user="ana", level=1)
    with pytest.raises(ValueError, match="mark_seen\\(\\) ids must be") as caught:
        await badges.mark_seen("ana", ids)
    assert named in str(caught.value)
    assert await badges.unseen("ana") == [award]  # Nothing was written.


# Publishing ----------------------------------------------------------------------------------


async def test_every_change_is_published_after_commit(badges: BadgeRegistry) -> None:
    """Each path of the app publishes: an event, a grant, a revoke, a replacement, an
    expiry (by the periodic job, and when the award is earned again)."""
    published: list[int] = []

    @badges.on_award
    async def count(award: Award) -> None:
        # Callbacks run after the notice is in the stream: after the commit.
        published.append(await stream_length(badges))

    now = datetime.datetime.now(UTC)
    [rank] = await badges.possibly_award_badge("ranked", user="ana", level=2)
    thanks = await badges.grant("bo", "thanks", by="admin", reason="Kind words")
    assert await badges.revoke("ana", "rank") == 1
    assert await badges.revoke("zed", "rank") == 0  # Nothing ended: nothing published.
    await badges.possibly_award_badge("climbed", user="cy", level=1)
    await badges.possibly_award_badge("climbed", user="cy", level=3)
    old = now - datetime.timedelta(days=8)
    await badges.possibly_award_badge("checked-in", user="dee", force_timestamp=old)
    await badges.possibly_award_badge("checked-in", user="eve", force_timestamp=old)
    assert await badges.expire_awards() == 1 + 1
    await badges.possibly_award_badge("checked-in", user="dee", force_timestamp=old)
    [again] = await badges.possibly_award_badge("checked-in", user="dee")

    notices = await collect(badges, 13)
    assert changes(notices) == [
        ("granted", "ana", "rank", 2),
        ("granted", "bo", "thanks", 1),
        ("revoked", "ana", "rank", 2),
        ("granted", "cy", "ladder", 1),
        ("replaced", "cy", "ladder", 1),
        ("granted", "cy", "ladder", 3),
        ("granted", "dee", "weekly", 1),
        ("granted", "eve", "weekly", 1),
        # The periodic job's.
        ("expired", "dee", "weekly", 1),
        ("expired", "eve", "weekly", 1),
        ("granted", "dee", "weekly", 1),
        # Earned again while the expired award still holds its key.
        ("expired", "dee", "weekly", 1),
        ("granted", "dee", "weekly", 1),
    ]
    assert notices[0].award == rank
    assert notices[1].award == thanks
    assert (notices[1].award.granted_by, notices[1].award.reason) == ("admin", "Kind words")
    assert notices[-1].award == again
    assert published[:2] == [1, 2]
    ids = [notice.id for notice in notices]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert len(set(ids)) == len(ids)


async def test_a_backfill_publishes_only_when_asked(badges: BadgeRegistry) -> None:
    report = await badges.backfill(["ana", "bo"], slugs=["thanks"])
    assert report.granted == 2
    assert await stream_length(badges) == 0
    # Its awards are in the unseen lists all the same.
    assert [a.slug for a in await badges.unseen("ana")] == ["thanks"]
    await badges.possibly_award_badge("ranked", user="ana", level=3)
    report = await badges.backfill(
        ["ana", "cy"], slugs=["rank"], state=lambda user: {"level": 1}, revoke=True, notify=True
    )
    assert (report.granted, report.revoked) == (2, 1)
    assert changes(await collect(badges, 4)) == [
        ("granted", "ana", "rank", 3),  # The event's.
        ("revoked", "ana", "rank", 3),  # Above what award() now gives.
        ("granted", "ana", "rank", 1),
        ("granted", "cy", "rank", 1),
    ]
    with pytest.raises(TypeError, match="backfill\\(\\) notify must be True or False; got 1"):
        await badges.backfill(["ana"], notify=1)  # type: ignore[arg-type]


async def test_the_stream_is_capped(registry: BadgeRegistry) -> None:
    registry.register(ThanksBadge)
    await registry.disconnect()
    with registry.configured(notices_maxlen=10):
        await registry.connect()
        flow = registry._connection.flow  # type: ignore[union-attr]
        awards = [NewAward("ana", "thanks", 1, START, f"k{n}") for n in range(500)]
        outcome = await flow.record(awards)
        assert len(outcome.recorded) == 500
        # Trimmed in whole nodes of the stream (100 entries by default): about the cap.
        assert 10 <= await stream_length(registry) <= 10 + 100


async def test_notices_are_off_with_the_inline_queue_unless_asked(registry: BadgeRegistry) -> None:
    registry.register(RankBadge)
    await registry.disconnect()
    with registry.configured(queue="inline"):
        await registry.connect()
        await registry.possibly_award_badge("ranked", user="ana", level=1)
        assert await stream_length(registry) == 0
        with pytest.raises(ConfigurationError, match='not published: the queue is "inline"'):
            registry.subscribe()
        await registry.disconnect()
        with registry.configured(notices=True):
            await registry.connect()
            await registry.possibly_award_badge("ranked", user="ana", level=2)
            assert changes(await collect(registry, 1)) == [("granted", "ana", "rank", 2)]
            await registry.disconnect()
    with registry.configured(notices=False):
        with pytest.raises(ConfigurationError, match="not published"):
            registry.subscribe()
    await registry.connect()


@contextlib.asynccontextmanager
async def silent_redis() -> AsyncIterator[str]:
    """The URL of a port that takes connections and never answers: a Redis that hangs."""
    port = free_port()

    async def hold(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, hold)
        try:
            yield f"redis://127.0.0.1:{port}"
        finally:
            task_group.cancel_scope.cancel()


async def award_in_an_outage(registry: BadgeRegistry, caplog: pytest.LogCaptureFixture) -> None:
    """An award while Redis does not answer: recorded, in the unseen list, within the
    timeout, and the failure logged with the badge and the user."""
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="abadges.notices"):
        await registry.possibly_award_badge("ranked", user="ana", level=2)
    assert time.monotonic() - started < ENQUEUE_TIMEOUT + 1
    assert [a.level for a in await registry.unseen("ana")] == [2, 1]
    [record] = [r for r in caplog.records if r.name == "abadges.notices"]
    message = record.getMessage()
    assert "Could not publish the notice of badge 'rank' level 2 granted for user 'ana'" in message
    assert "the awards are recorded" in message


async def test_a_stopped_redis_neither_fails_nor_holds_up_an_award(
    registry: BadgeRegistry, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    registry.register(RankBadge)
    await registry.disconnect()
    with registry.configured(redis_url=redis_server.url):
        await registry.connect()
        await registry.possibly_award_badge("ranked", user="ana", level=1)
        await redis_server.stop()
        await award_in_an_outage(registry, caplog)
        # Back: the next award is published, without a restart of the app.
        await redis_server.start()
        [third] = await registry.possibly_award_badge("ranked", user="ana", level=3)
        assert [n.award for n in await collect(registry, 1)] == [third]
        await registry.disconnect()
    await registry.connect()


async def test_a_silent_redis_holds_up_an_award_for_the_timeout_at_most(
    registry: BadgeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    registry.register(RankBadge)
    await registry.possibly_award_badge("ranked", user="ana", level=1)
    await registry.disconnect()
    async with silent_redis() as url:
        # Inline: nothing else of the call waits for Redis.
        with registry.configured(redis_url=url, queue="inline", notices=True):
            await registry.connect()
            await award_in_an_outage(registry, caplog)
            assert "TimeoutError" in caplog.records[-1].getMessage()
            await registry.disconnect()
    await registry.connect()


async def test_calls_publishing_behind_a_silent_redis_wait_the_timeout_once(
    registry: BadgeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The notices of calls made while a publication hangs go in the next round trip, which
    gets only what is left of their own timeout, not a timeout of its own after the first."""
    registry.register(RankBadge)
    await registry.disconnect()
    async with silent_redis() as url:
        with registry.configured(redis_url=url, queue="inline", notices=True):
            await registry.connect()
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="abadges.notices"):
                async with anyio.create_task_group() as group:
                    for i in range(8):
                        group.start_soon(
                            functools.partial(
                                registry.possibly_award_badge, "ranked", user=f"u{i}", level=1
                            )
                        )
            assert time.monotonic() - started < ENQUEUE_TIMEOUT * 1.5
            warnings = [r.getMessage() for r in caplog.records if r.name == "abadges.notices"]
            # The first call's round trip, then one for the seven that queued behind it.
            assert len(warnings) == 2
            assert "for user 'u1' and 6 more" in warnings[1]
            assert len(await registry.history()) == 8
            await registry.disconnect()
    await registry.connect()


# Subscribing ---------------------------------------------------------------------------------


async def test_subscribe_filters_by_user_and_resumes_after_last_id(badges: BadgeRegistry) -> None:
    for user, level in (("ana", 1), ("bo", 1), ("ana", 2), ("bo", 2), ("ana", 3)):
        await badges.possibly_award_badge("ranked", user=user, level=level)
    everything = await collect(badges, 5)
    ana = await collect(badges, 3, user="ana")
    assert ana == [n for n in everything if n.award.user_id == "ana"]
    # After the first of ana's: the two others, and nothing of bo's.
    assert await collect(badges, 2, user="ana", last_id=ana[0].id) == ana[1:]
    assert await collect(badges, 1, last_id=everything[3].id) == everything[4:]


async def test_subscribe_starts_with_what_is_published_after_its_first_read(
    badges: BadgeRegistry,
) -> None:
    await badges.possibly_award_badge("ranked", user="ana", level=1)
    notices = badges.subscribe("ana")
    found: list[AwardNotice] = []

    async def read() -> None:
        async for notice in notices:
            found.append(notice)
            return

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(read)
        await anyio.sleep(0.5)  # Reading, from the stream's end.
        [new] = await badges.possibly_award_badge("ranked", user="ana", level=2)
    await notices.aclose()
    assert [n.award for n in found] == [new]


async def test_subscribe_goes_on_through_a_redis_restart(
    registry: BadgeRegistry, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    registry.register(RankBadge)
    await registry.disconnect()
    with registry.configured(redis_url=redis_server.url):
        await registry.connect()
        [first] = await registry.possibly_award_badge("ranked", user="ana", level=1)
        notices = registry.subscribe("ana", last_id="0")
        found: list[Award] = []

        async def read() -> None:
            async for notice in notices:
                found.append(notice.award)

        async def until(count: int) -> None:
            while len(found) < count:  # noqa: ASYNC110 - the reader appends
                await anyio.sleep(0.05)

        with caplog.at_level(logging.WARNING, logger="abadges.notices"), anyio.fail_after(20):
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(read)
                await until(1)
                await anyio.sleep(0.2)  # In its next XREAD, blocked.
                # Redis goes away with the stream (it keeps nothing on disk), and is back
                # after a while; the award in between is not published.
                await redis_server.stop()
                await registry.possibly_award_badge("ranked", user="ana", level=2)
                await anyio.sleep(0.5)
                await redis_server.start()
                [third] = await registry.possibly_award_badge("ranked", user="ana", level=3)
                await until(2)
                task_group.cancel_scope.cancel()
        await notices.aclose()
        assert found == [first, third]
        assert any("Lost the Redis stream" in r.getMessage() for r in caplog.records)
        # What Redis lost is in the unseen list.
        assert [a.level for a in await registry.unseen("ana")] == [3, 2, 1]
        await registry.disconnect()
    await registry.connect()


async def clients(url: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return len(await client.client_list()) - 1  # Not this one.
    finally:
        await client.aclose()


async def test_closing_a_subscription_closes_its_connection(
    registry: BadgeRegistry, redis_server: RedisServer
) -> None:
    registry.register(RankBadge)
    await registry.disconnect()
    with registry.configured(redis_url=redis_server.url, queue="inline", notices=True):
        await registry.connect()
        for level in (1, 2):
            await registry.possibly_award_badge("ranked", user="ana", level=level)
        publisher = await clients(redis_server.url)
        notices = registry.subscribe(last_id="0")
        assert (await anext(notices)).award.level == 1
        assert await clients(redis_server.url) == publisher + 1
        await notices.aclose()
        assert await clients(redis_server.url) == publisher
        # Leaving an async for closes it too, once the iterator is dropped.
        async for _ in registry.subscribe(last_id="0"):
            assert await clients(redis_server.url) == publisher + 1
            break
        gc.collect()
        with anyio.fail_after(5):
            while await clients(redis_server.url) != publisher:  # noqa: ASYNC110 - Redis's count
                await anyio.sleep(0.05)
        await registry.disconnect()
    await registry.connect()


async def test_subscribe_skips_entries_that_are_not_notices(
    badges: BadgeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    settings = badges.settings
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        await client.xadd(settings.notices_stream, {"v": "1", "change": "gone", "award": "{}"})
        await client.xadd(settings.notices_stream, {"something": "else"})
        await client.xadd(settings.notices_stream, {"v": "2", "change": "granted"})
    finally:
        await client.aclose()
    [award] = await badges.possibly_award_badge("ranked", user="ana", level=1)
    with caplog.at_level(logging.WARNING, logger="abadges.notices"):
        assert [n.award for n in await collect(badges, 1)] == [award]
    skipped = [r.getMessage() for r in caplog.records if "Skipped entry" in r.getMessage()]
    assert len(skipped) == 3
    assert "change 'gone'" in skipped[0]
    assert "KeyError" in skipped[1]


async def test_subscribe_to_a_key_that_is_no_stream_says_so(badges: BadgeRegistry) -> None:
    settings = badges.settings
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        await client.set(settings.notices_stream, "a string")
        with pytest.raises(ConfigurationError, match=r"cannot read .* as the stream of notices"):
            await collect(badges, 1)
    finally:
        await client.delete(settings.notices_stream)
        await client.aclose()


@pytest.mark.parametrize("last_id", ["$", "", "abc", "1-2-3", 12, b"1-0"])
def test_subscribe_refuses_a_last_id_that_is_no_stream_id(last_id: Any) -> None:
    registry = BadgeRegistry()
    with pytest.raises(ValueError, match="last_id must be None or the id of a notice") as caught:
        registry.subscribe(last_id=last_id)
    assert str(caught.value).endswith(f"got {last_id!r}.")


def test_a_notice_carries_the_award_as_it_was() -> None:
    award = Award(7, "ana", "rank", 2, "Silver", None, START, "manual", "admin", "Why", START)
    fields = {k.encode(): v.encode() for k, v in fields_of("revoked", award).items()}
    assert notice_of("5-0", fields) == AwardNotice("5-0", "revoked", award)
    fields[b"v"] = b"0"
    with pytest.raises(ValueError, match="version"):
        notice_of("5-0", fields)
