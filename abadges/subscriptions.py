"""Subscriptions to the notices stream (`BadgeRegistry.subscribe()`): one reader per event loop
and stream, whose notices are fanned out to the subscriptions of each user.

A process serving a thousand pages has a thousand subscriptions. Were each to XREAD the stream
on a connection of its own, every notice would be read, sent and decoded a thousand times. The
subscriptions of one event loop to one stream share a `Hub` instead, with one connection pool:

- One blocking XREAD at a time reads the stream for all of them. It is done by a waiting
  subscription whose turn it is, not by a task of its own, so nothing outlives the last
  subscription. Each notice read is decoded once and handed to the subscriptions of its user
  (and to those of every user), which are woken.
- A subscription that starts behind the hub (a `last_id` from an earlier page) reads on its
  own, without blocking, until it is level with the stream's end, and then joins. One that
  lets more than `BACKLOG` notices pile up (a page that stopped reading) leaves, and catches up
  the same way.

Each subscription keeps the id of the last notice it has, and takes a notice only after it, so
none still in the stream is missed or given twice, whichever way it came.
"""

from __future__ import annotations

import asyncio
import collections
import random
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TypeVar

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._utils import describe, obscure
from .exceptions import ConfigurationError
from .notices import AwardNotice, logger, notice_of
from .queue import ENQUEUE_TIMEOUT
from .redis_url import redis_client

#: Seconds one blocking XREAD waits for; its socket waits this long and `READ_SLACK`.
BLOCK = 5.0
READ_SLACK = 5.0
#: How many entries one XREAD reads at most.
READ_COUNT = 100
#: How many notices may wait for a subscription before it leaves the hub to catch up alone.
BACKLOG = 1000
#: Seconds before reading again from a Redis that went away: doubled after each failure, up to
#: the cap, with jitter so that many processes do not return at once.
RECONNECT_DELAY = 0.1
RECONNECT_DELAY_CAP = 5.0

T = TypeVar("T")
Position = tuple[int, int]
Entry = tuple[str, Mapping[bytes, bytes]]


def position_of(entry_id: str) -> Position:
    """A stream id as a pair that sorts as Redis does ("17-0" < "17-1" < "18")."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def text_of(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


class Subscription:
    """One `subscribe()`: the stream position up to which it has its notices (given or
    `ready`), the last one given, and whether the hub reads for it."""

    def __init__(self, user_id: bytes | None, after: Position) -> None:
        self.user_id = user_id
        self.read_to = after
        self.given = after
        self.ready: collections.deque[AwardNotice] = collections.deque()
        self.joined = False
        self.wake: anyio.Event | None = None

    def wants(self, fields: Mapping[bytes, bytes]) -> bool:
        return self.user_id is None or fields.get(b"user_id") == self.user_id


class Hub:
    """The subscriptions of one event loop to one stream, and the one reader they share."""

    def __init__(self, redis_url: str, stream: str) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.client = redis_client(
            redis_url, socket_connect_timeout=ENQUEUE_TIMEOUT, socket_timeout=BLOCK + READ_SLACK
        )
        self.members = 0
        # Where the shared XREAD reads from: None while no subscription is joined.
        self.position: Position | None = None
        self.joined: dict[bytes | None, set[Subscription]] = {}
        # Subscriptions waiting for notices, in the order they began to wait.
        self.waiting: dict[Subscription, None] = {}
        self.reading = False
        self.delay = RECONNECT_DELAY

    async def newest(self) -> Position | None:
        """The position of the stream's last entry ("0-0" for none); None after a failure."""
        found = await self._attempt(lambda: self.client.xrevrange(self.stream, count=1), None)
        if found is None:
            return None
        return position_of(found[0][0].decode()) if found else (0, 0)

    async def catch_up(self, subscription: Subscription) -> None:
        """Read on for `subscription` alone, without blocking; join once at the stream's end."""
        entries = await self._read(subscription.read_to, block=None)
        if entries is None:
            return
        for entry_id, fields in entries:
            subscription.read_to = position_of(entry_id)
            if subscription.wants(fields):
                notice = self._decode(entry_id, fields)
                if notice is not None:
                    subscription.ready.append(notice)
        # At the end of the stream, as far as this read knows. Joining needs the hub not to be
        # past it (it read on meanwhile): what it reads from then on is this subscription's.
        if len(entries) < READ_COUNT and (
            self.position is None or self.position <= subscription.read_to
        ):
            if self.position is None:
                self.position = subscription.read_to
            self.joined.setdefault(subscription.user_id, set()).add(subscription)
            subscription.joined = True

    async def wait(self, subscription: Subscription) -> None:
        """Until a notice is ready for the joined `subscription`: reading for every
        subscription when no other is, else woken by the one that does."""
        if not self.reading:
            await self._read_for_all()
            return
        wake = subscription.wake = anyio.Event()
        self.waiting[subscription] = None
        try:
            await wake.wait()
        except anyio.get_cancelled_exc_class():
            # It may have been woken to read next: the turn goes to another.
            del self.waiting[subscription]
            if not self.reading:
                self._wake_reader()
            raise
        finally:
            self.waiting.pop(subscription, None)
            subscription.wake = None

    def leave(self, subscription: Subscription | None) -> None:
        """A subscription has closed (None: before it had a position)."""
        self.members -= 1
        if subscription is not None:
            self._unjoin(subscription)

    async def _read_for_all(self) -> None:
        self.reading = True
        try:
            assert self.position is not None
            entries = await self._read(self.position, block=int(BLOCK * 1000))
            for entry_id, fields in entries or ():
                self._deliver(entry_id, fields)
        finally:
            self.reading = False
            self._wake_reader()

    def _deliver(self, entry_id: str, fields: Mapping[bytes, bytes]) -> None:
        """Hand the entry to the joined subscriptions that want it and have not got it."""
        at = self.position = position_of(entry_id)
        user_id = fields.get(b"user_id")
        targets = [*self.joined.get(None, ())]
        if user_id is not None:
            targets += self.joined.get(user_id, ())
        if not targets:
            return
        notice = self._decode(entry_id, fields)
        if notice is None:
            return
        for subscription in targets:
            if at <= subscription.read_to:
                continue  # It read this one itself, catching up.
            subscription.read_to = at
            subscription.ready.append(notice)
            if len(subscription.ready) > BACKLOG:
                # Not read for too long: it leaves, and reads from its last notice given
                # again when it comes back.
                subscription.ready.clear()
                subscription.read_to = subscription.given
                self._unjoin(subscription)
            if subscription.wake is not None:
                subscription.wake.set()

    def _unjoin(self, subscription: Subscription) -> None:
        if subscription.joined:
            subscription.joined = False
            joined = self.joined[subscription.user_id]
            joined.discard(subscription)
            if not joined:
                del self.joined[subscription.user_id]
            if not self.joined:
                self.position = None

    def _wake_reader(self) -> None:
        """Wake the first waiting subscription not woken yet: it reads next."""
        for waiting in self.waiting:
            if waiting.wake is not None and not waiting.wake.is_set():
                waiting.wake.set()
                return

    async def _read(self, after: Position, block: int | None) -> list[Entry] | None:
        """The entries after `after`; None after a failure."""
        position = text_of(after)
        found = await self._attempt(
            lambda: self.client.xread({self.stream: position}, count=READ_COUNT, block=block),
            position,
        )
        if found is None:
            return None
        return [(raw_id.decode(), fields) for _, entries in found for raw_id, fields in entries]

    async def _attempt(self, command: Callable[[], Awaitable[T]], position: str | None) -> T | None:
        """`command()`'s result; after a lost connection, None once the backoff has passed."""
        try:
            result = await command()
        except (OSError, RedisConnectionError, RedisTimeoutError) as exc:
            logger.warning(
                "Lost the Redis stream %r at %s (%s); reading again after %s in %.1fs.",
                self.stream,
                obscure(self.redis_url),
                describe(exc),
                position or "its last entry",
                self.delay,
            )
            delay = self.delay
            self.delay = min(delay * 2, RECONNECT_DELAY_CAP)
            await anyio.sleep(random.uniform(delay / 2, delay))
            return None
        except ResponseError as exc:
            raise ConfigurationError(
                f"Redis at {obscure(self.redis_url)} cannot read {self.stream!r} as the stream "
                f"of notices ({describe(exc)}): the notices_stream setting names a key that "
                "holds something else."
            ) from exc
        self.delay = RECONNECT_DELAY
        return result

    def _decode(self, entry_id: str, fields: Mapping[bytes, bytes]) -> AwardNotice | None:
        try:
            return notice_of(entry_id, fields)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning(
                "Skipped entry %s of the Redis stream %r: it is not an abadges notice (%s).",
                entry_id,
                self.stream,
                describe(exc),
            )
            return None


#: The hubs of each running event loop, by Redis URL and stream.
HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Hub]] = (
    weakref.WeakKeyDictionary()
)


async def subscribe(
    redis_url: str, stream: str, user_id: str | None, last_id: str | None
) -> AsyncGenerator[AwardNotice, None]:
    """The notices of the stream after `last_id` (None: from now on), of user `user_id` only
    when given; through a Redis that went away too, after each notice given. Entries that are
    not abadges notices are skipped with a warning."""
    hubs = HUBS.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get((redis_url, stream))
    if hub is None:
        hub = hubs[redis_url, stream] = Hub(redis_url, stream)
    hub.members += 1
    subscription: Subscription | None = None
    try:
        after = None if last_id is None else position_of(last_id)
        while after is None:
            # The stream's last id, not "$": what is published once this has run is read,
            # across a reconnection too.
            after = await hub.newest()
        wanted = None if user_id is None else user_id.encode("utf-8", "surrogatepass")
        subscription = Subscription(wanted, after)
        while True:
            if subscription.ready:
                notice = subscription.ready.popleft()
                subscription.given = position_of(notice.id)
                yield notice
            elif subscription.joined:
                await hub.wait(subscription)
            else:
                await hub.catch_up(subscription)
    finally:
        hub.leave(subscription)
        if hub.members == 0:
            del hubs[redis_url, stream]
            with anyio.CancelScope(shield=True):
                await hub.client.aclose()
