"""Many subscriptions in one process (`abadges.subscriptions`): they share one reader, each gets
exactly its notices in order, whether it joined live, resumed from behind, fell behind and
caught up, or lost its reader; through a Redis that is down when they start, too."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncGenerator, AsyncIterator

import anyio
import pytest
import redis.asyncio

from abadges import Award, AwardNotice, BadgeRegistry
from abadges import subscriptions as subscriptions_module
from abadges.notices import fields_of
from abadges.subscriptions import HUBS, Hub, Subscription
from abadges.testing import RedisServer

# Nothing here touches the database: SQLite is enough.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
UTC = datetime.UTC


@pytest.fixture
async def private(registry: BadgeRegistry, redis_server: RedisServer) -> AsyncIterator[str]:
    """The registry on a Redis of this test's own, whose commands it can count; its URL."""
    await registry.disconnect()
    with registry.configured(redis_url=redis_server.url):
        yield redis_server.url
    await registry.connect()


class Stream:
    """Writes notices to the registry's stream as the publisher does, and counts commands."""

    def __init__(self, registry: BadgeRegistry) -> None:
        self.name = registry.settings.notices_stream
        self.client = redis.asyncio.Redis.from_url(registry.settings.redis_url)
        self.sent: list[tuple[str, Award]] = []

    async def publish(self, user_id: str, **fields: bytes | str) -> str:
        award = Award(
            id=len(self.sent) + 1,
            user_id=user_id,
            slug="rank",
            level=1,
            name="Bronze",
            description="",
            awarded_at=datetime.datetime(2026, 1, 1, tzinfo=UTC),
        )
        entry: dict[str, str | bytes] = {**fields_of("granted", award), **fields}
        raw: bytes = await self.client.xadd(self.name, entry)
        entry_id = raw.decode()
        self.sent.append((entry_id, award))
        return entry_id

    def of(self, user_id: str | None) -> list[tuple[str, Award]]:
        return [(i, a) for i, a in self.sent if user_id is None or a.user_id == user_id]

    async def xread_calls(self) -> int:
        stats = await self.client.info("commandstats")
        return int(stats.get("cmdstat_xread", {}).get("calls", 0))

    async def aclose(self) -> None:
        await self.client.aclose()


@pytest.fixture
async def stream(registry: BadgeRegistry) -> AsyncIterator[Stream]:
    stream = Stream(registry)
    yield stream
    await stream.aclose()


class Reader:
    """A subscription read in a task, into `got`."""

    def __init__(self, notices: AsyncGenerator[AwardNotice, None]) -> None:
        self.notices = notices
        self.got: list[tuple[str, Award]] = []

    async def run(self) -> None:
        async for notice in self.notices:
            self.got.append((notice.id, notice.award))


async def until(condition: object, seconds: float = 10) -> None:
    with anyio.fail_after(seconds):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - readers append
            await anyio.sleep(0.01)


def hub_of(registry: BadgeRegistry) -> Hub:
    settings = registry.settings
    return HUBS[asyncio.get_running_loop()][settings.redis_url, settings.notices_stream]


@SQLITE
async def test_subscriptions_share_one_reader_and_each_gets_its_own(
    registry: BadgeRegistry, private: str
) -> None:
    stream = Stream(registry)
    users = [f"user-{n}" for n in range(10)]
    for user in users:
        await stream.publish(user)  # Before they subscribe: read as they catch up.
    readers = {
        (user, copy): Reader(registry.subscribe(user, last_id="0"))
        for user in users
        for copy in range(3)
    }
    everyone = [Reader(registry.subscribe(last_id="0")) for _ in range(5)]
    async with anyio.create_task_group() as task_group:
        for reader in [*readers.values(), *everyone]:
            task_group.start_soon(reader.run)
        await until(lambda: all(len(r.got) == 10 for r in everyone))
        await until(lambda: all(r.got for r in readers.values()))
        before = await stream.xread_calls()
        for n in range(60):
            await stream.publish(users[n % 10])
            await anyio.sleep(0.002)
        await until(lambda: all(len(r.got) == 70 for r in everyone))
        await until(lambda: all(len(r.got) == 7 for r in readers.values()))
        # One blocking XREAD at a time for the 35 subscriptions, not one each: about one per
        # notice published (fewer when one read finds several).
        calls = await stream.xread_calls() - before
        assert calls <= 60 + 5
        task_group.cancel_scope.cancel()
    for (user, _), reader in readers.items():
        assert reader.got == stream.of(user)
    for reader in everyone:
        assert reader.got == stream.of(None)
    for reader in [*readers.values(), *everyone]:
        await reader.notices.aclose()
    # The last one closed, the hub is gone, with its connections.
    assert (registry.settings.redis_url, registry.settings.notices_stream) not in HUBS.get(
        asyncio.get_running_loop(), {}
    )
    client = redis.asyncio.Redis.from_url(private)
    assert len(await client.client_list()) == 2  # This one and the stream writer's.
    await client.aclose()
    await stream.aclose()


@SQLITE
async def test_a_subscription_from_behind_joins_the_live_ones_without_gap_or_repeat(
    registry: BadgeRegistry, stream: Stream
) -> None:
    live = Reader(registry.subscribe(last_id="0"))
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(live.run)
        first = await stream.publish("ana")
        await until(lambda: len(live.got) == 1)
        for _ in range(250):  # More than one read of READ_COUNT.
            await stream.publish("ana")
        await until(lambda: len(live.got) == 251)
        # Resumes after the first, while more are published: it reads the 250 on its own,
        # then joins the hub, which may already have read what it read.
        behind = Reader(registry.subscribe("ana", last_id=first))
        task_group.start_soon(behind.run)
        for _ in range(30):
            await stream.publish("ana")
            await anyio.sleep(0.001)
        await until(lambda: len(behind.got) == 280 and len(live.got) == 281)
        task_group.cancel_scope.cancel()
    await live.notices.aclose()
    await behind.notices.aclose()
    assert live.got == stream.of(None)
    assert behind.got == stream.of(None)[1:]


@SQLITE
async def test_a_subscription_that_stops_reading_falls_behind_and_catches_up(
    registry: BadgeRegistry, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions_module, "BACKLOG", 5)
    live = Reader(registry.subscribe(last_id="0"))
    slow = registry.subscribe(last_id="0")
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(live.run)
        await stream.publish("ana")
        got = [await anext(slow)]
        await until(lambda: len(live.got) == 1)
        hub = hub_of(registry)
        assert sum(len(joined) for joined in hub.joined.values()) == 2
        # `slow` is not read: the reads for `live` pile its notices up, until it leaves.
        for _ in range(20):
            await stream.publish("bo")
        await until(lambda: len(live.got) == 21)
        assert sum(len(joined) for joined in hub.joined.values()) == 1
        with anyio.fail_after(10):
            while len(got) < 21:
                notice = await anext(slow)
                got.append(notice)
        # Level again, it is back in the hub, and gets the next one live.
        await stream.publish("cy")
        got.append(await anext(slow))
        assert sum(len(joined) for joined in hub.joined.values()) == 2
        task_group.cancel_scope.cancel()
    await live.notices.aclose()
    await slow.aclose()
    assert [(n.id, n.award) for n in got] == stream.of(None)


@SQLITE
async def test_the_others_read_on_when_the_reading_subscription_is_cancelled(
    registry: BadgeRegistry, stream: Stream
) -> None:
    readers = [Reader(registry.subscribe(last_id="0")) for _ in range(3)]
    await stream.publish("ana")
    async with anyio.create_task_group() as outer:
        scopes = []
        for reader in readers:
            scope = anyio.CancelScope()
            scopes.append(scope)

            async def run(reader: Reader = reader, scope: anyio.CancelScope = scope) -> None:
                with scope:
                    await reader.run()

            outer.start_soon(run)
        await until(lambda: all(len(r.got) == 1 for r in readers))
        await anyio.sleep(0.1)  # All joined: one in its blocking XREAD, two waiting.
        hub = hub_of(registry)
        assert hub.reading and len(hub.waiting) == 2
        for scope in scopes[:2]:
            scope.cancel()
        await anyio.sleep(0.05)
        # The one left reads at once, not after the cancelled read's block of 5 s.
        with anyio.fail_after(2):
            await stream.publish("bo")
            await until(lambda: len(readers[2].got) == 2, seconds=2)
        outer.cancel_scope.cancel()
    for reader in readers:
        await reader.notices.aclose()
    assert readers[2].got == stream.of(None)


async def test_a_waiting_subscription_cancelled_while_no_one_reads_passes_the_turn() -> None:
    # The read has just ended, and woken a waiting subscription to read next (here, as no
    # read ran, none): one cancelled then might have been that one, so it wakes another.
    hub = Hub("redis://127.0.0.1:1", "unused")
    first, second = Subscription(None, (0, 0)), Subscription(None, (0, 0))
    for subscription in (first, second):
        subscription.joined = True
    hub.position = (0, 0)
    hub.reading = True
    woken: list[Subscription] = []

    async def wait(subscription: Subscription, scope: anyio.CancelScope) -> None:
        with scope:
            await hub.wait(subscription)
            woken.append(subscription)

    scopes = [anyio.CancelScope(), anyio.CancelScope()]
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(wait, first, scopes[0])
        task_group.start_soon(wait, second, scopes[1])
        await until(lambda: len(hub.waiting) == 2)
        hub.reading = False
        scopes[0].cancel()
        await until(lambda: woken == [second])
    assert hub.waiting == {}
    await hub.client.aclose()


@SQLITE
async def test_subscriptions_started_while_redis_is_down_begin_when_it_is_back(
    registry: BadgeRegistry, redis_server: RedisServer, private: str
) -> None:
    await redis_server.stop()
    fresh = Reader(registry.subscribe())  # From now on: it cannot tell where the end is.
    resuming = Reader(registry.subscribe(last_id="0"))
    gone = Reader(registry.subscribe())
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(fresh.run)
        task_group.start_soon(resuming.run)
        with anyio.move_on_after(0.3):
            await gone.run()  # Given up before Redis is back: it leaves the hub as it was.
        await gone.notices.aclose()
        assert hub_of(registry).members == 2
        await anyio.sleep(0.2)
        await redis_server.start()
        stream = Stream(registry)
        # `fresh` reads what is published once it has found the end: publish until it has.
        with anyio.fail_after(15):
            while not fresh.got:
                await stream.publish("ana")
                await anyio.sleep(0.1)
        await until(lambda: len(resuming.got) == len(stream.sent))
        task_group.cancel_scope.cancel()
    await fresh.notices.aclose()
    await resuming.notices.aclose()
    assert resuming.got == stream.of(None)
    assert fresh.got == stream.of(None)[-len(fresh.got) :]
    await stream.aclose()


@SQLITE
async def test_the_hub_skips_entries_that_are_not_notices_once(
    registry: BadgeRegistry, stream: Stream, caplog: pytest.LogCaptureFixture
) -> None:
    readers = [Reader(registry.subscribe(last_id="0")) for _ in range(3)]
    only_bo = Reader(registry.subscribe("bo", last_id="0"))
    with caplog.at_level(logging.WARNING, logger="abadges.notices"):
        async with anyio.create_task_group() as task_group:
            for reader in [*readers, only_bo]:
                task_group.start_soon(reader.run)
            await stream.publish("ana")
            await until(lambda: all(len(r.got) == 1 for r in readers))
            await stream.client.xadd(stream.name, {"v": "1", "change": "gone", "user_id": "bo"})
            await stream.client.xadd(stream.name, {"something": "else"})
            await stream.publish("bo")
            await until(lambda: all(len(r.got) == 2 for r in readers) and only_bo.got)
            task_group.cancel_scope.cancel()
    for reader in [*readers, only_bo]:
        await reader.notices.aclose()
        assert reader.got == stream.of("bo" if reader is only_bo else None)
    skipped = [r.getMessage() for r in caplog.records if "Skipped entry" in r.getMessage()]
    assert len(skipped) == 2  # Once each, not once per subscription.


@SQLITE
async def test_a_subscription_of_one_user_is_not_woken_by_another_s(
    registry: BadgeRegistry, stream: Stream
) -> None:
    only_bo = Reader(registry.subscribe("bo", last_id="0"))
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(only_bo.run)
        await stream.publish("bo")
        await until(lambda: len(only_bo.got) == 1)
        for _ in range(3):
            await stream.publish("ana")
        await stream.publish("bo")
        await until(lambda: len(only_bo.got) == 2)
        task_group.cancel_scope.cancel()
    await only_bo.notices.aclose()
    assert only_bo.got == stream.of("bo")


def test_the_hub_does_not_hand_over_what_a_subscription_read_itself() -> None:
    # A subscription that caught up to an entry the hub has not read yet joins; when the hub
    # reads it, the subscription does not get it twice.
    hub = Hub("redis://127.0.0.1:1", "unused")
    ahead = Subscription(None, (5, 0))
    hub.position = (1, 0)
    hub.joined[None] = {ahead}
    ahead.joined = True
    for entry_id in ("3-0", "5-0", "6-0"):
        award = Award(
            id=int(entry_id[0]),
            user_id="ana",
            slug="rank",
            level=1,
            name="Bronze",
            description="",
            awarded_at=datetime.datetime(2026, 1, 1, tzinfo=UTC),
        )
        fields = {k.encode(): v.encode() for k, v in fields_of("granted", award).items()}
        hub._deliver(entry_id, fields)
    assert [notice.id for notice in ahead.ready] == ["6-0"]
    assert hub.position == (6, 0)
