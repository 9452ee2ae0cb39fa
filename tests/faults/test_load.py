"""Load with faults: three app processes fire a seeded stream of events (inline and deferred
badges, multiple and not) while two workers drain the queue, and a fault strikes during the
run. Afterwards the awards table must equal the reference computation of the stream: no award
lost, none duplicated, no worker dead but those the test killed.

Each run has a PostgreSQL cluster and a Redis of its own, since faults stop them.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from abadges import BadgeRegistry
from abadges.testing import RedisServer
from tests.faults.harness import FAULTS, QUEUE, LoadRun
from tests.faults.load import StreakBadge
from tests.faults.servers import PersistentRedis, PostgresServer, postgres_binaries
from tests.support import IN_CI

EVENTS = 1500


@pytest.fixture
async def postgres() -> AsyncIterator[PostgresServer]:
    binaries = postgres_binaries()
    if binaries is None:
        message = "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) for a private cluster"
        if IN_CI:
            pytest.fail(f"{message}; CI must run the fault suite.")
        pytest.skip(message)
    async with PostgresServer(binaries) as server:
        yield server


@pytest.fixture
async def persistent_redis() -> AsyncIterator[PersistentRedis]:
    async with PersistentRedis() as server:
        yield server


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_the_awards_equal_the_reference_after_a_fault(
    fault: str,
    postgres: PostgresServer,
    persistent_redis: PersistentRedis,
    tmp_path: pathlib.Path,
) -> None:
    run = LoadRun(postgres, persistent_redis, tmp_path, events=EVENTS)
    report = await run.run(fault, FAULTS[fault])
    print(report.summary())
    details = f"{report.summary()}\n{report.differences}\n{run.worker_logs()}"
    assert report.expected > 400, details  # The stream awards every badge many times.
    assert (report.lost, report.duplicated) == (0, 0), details
    assert report.awards == report.expected, details
    if fault != "restart_redis":
        assert report.worker_deaths == 0, details
    # Otherwise a worker may exit: arq ends it when Redis drops the connection inside its
    # job-claim transaction (a WATCH), a documented limit; the run's supervisor restarts it,
    # and the table must still equal the reference.
    if fault != "none":
        assert report.faults > 0


async def test_a_redis_that_keeps_nothing_loses_the_queue_when_it_restarts(
    redis_server: RedisServer, tmp_path: pathlib.Path
) -> None:
    """The limit behind the Redis restart above: jobs live in Redis, so a Redis without
    persistence (no append-only file) forgets the queued ones when it restarts."""
    registry = BadgeRegistry()
    registry.register(StreakBadge)
    registry.configure(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'awards.sqlite3'}",
        redis_url=redis_server.url,
        queue_name=QUEUE,
    )
    async with registry.lifespan():
        await registry.create_tables()
        for count in range(3):
            await registry.possibly_award_badge("visited", user="ana", count=count)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        assert await client.zcard(QUEUE) == 3
        await redis_server.stop()
        await redis_server.start()
        assert await client.zcard(QUEUE) == 0
    finally:
        await client.aclose()
