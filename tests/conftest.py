"""Real databases and a real Redis for the suite.

SQLite always runs, on a temporary file. PostgreSQL and MariaDB run against the servers named by
`ABADGES_TEST_POSTGRES_URL` and `ABADGES_TEST_MYSQL_URL` (defaults: the local servers), each in
a scratch database that the session creates and drops. A server that does not answer skips its
tests with a notice, except under `CI=true`, where it fails them.

Redis is `ABADGES_TEST_REDIS_URL`, else 127.0.0.1:6379 when it answers, else a private
redis-server the session starts. Each test queues under a queue name of its own and deletes it
afterwards. Tests that stop Redis use a private server of their own (`redis_server`). The
notices of registries that a test configures itself (and of the processes it starts) go to a
stream of the session's own (`ABADGES_NOTICES_STREAM`), deleted at its end; those of the
`registry` fixture to one of the test's own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import databases
import pytest
import redis
import redis.asyncio
import sqlalchemy as sa

from abadges import BadgeRegistry
from abadges.tables import awards, backfills, history, level_counts, totals
from abadges.testing import RedisServer
from tests.support import IN_CI, Rows, answers

SERVER_URLS = {
    "postgresql": os.environ.get(
        "ABADGES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("ABADGES_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test"),
}
exercised: list[str] = []
redis_used: list[str] = []
#: Where the notices go of the registries and processes that set no stream of their own.
SESSION_NOTICES = f"abadges:test:{uuid.uuid4().hex[:12]}:changes"


@pytest.fixture(scope="session", autouse=True)
def session_notices() -> Iterator[str]:
    """`ABADGES_NOTICES_STREAM` for the session; the stream is deleted from the shared Redis
    at its end."""
    previous = os.environ.get("ABADGES_NOTICES_STREAM")
    os.environ["ABADGES_NOTICES_STREAM"] = SESSION_NOTICES
    try:
        yield SESSION_NOTICES
    finally:
        if previous is None:
            del os.environ["ABADGES_NOTICES_STREAM"]
        else:
            os.environ["ABADGES_NOTICES_STREAM"] = previous
        # Also where the registries that set no Redis of their own publish (the settings'
        # default, the local server), whether or not a test of the session asked for Redis.
        default = os.environ.get("ABADGES_TEST_REDIS_URL", "redis://127.0.0.1:6379")
        for url in dict.fromkeys([*(used.partition(" ")[0] for used in redis_used), default]):
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            try:
                client.delete(SESSION_NOTICES)
            except redis.RedisError:  # A private server, stopped by now: nothing is left.
                pass
            finally:
                client.close()


@pytest.fixture(scope="session", params=["sqlite", "postgresql", "mysql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A URL to an empty database of each backend, private to this test session."""
    backend: str = request.param
    if backend == "sqlite":
        exercised.append(backend)
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'abadges.sqlite3'}"
        return
    admin = databases.Database(SERVER_URLS[backend])
    try:
        with anyio.fail_after(10):
            await admin.connect()
    except Exception as exc:
        message = f"{backend} is not reachable at {admin.url.obscure_password}: {exc!r}"
        if IN_CI:
            pytest.fail(f"{message}; CI must exercise every database.")
        pytest.skip(message)
    name = f"abadges_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f"CREATE DATABASE {name}")
    exercised.append(backend)
    try:
        yield str(admin.url.replace(database=name))
    finally:
        drop = f"DROP DATABASE {name}" + (" WITH (FORCE)" if backend == "postgresql" else "")
        await admin.execute(drop)
        await admin.disconnect()


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str]:
    """The Redis the suite queues jobs in (see the module docstring)."""
    configured = os.environ.get("ABADGES_TEST_REDIS_URL")
    if configured:
        redis_used.append(f"{configured} (ABADGES_TEST_REDIS_URL)")
        yield configured
    elif await answers(6379):
        redis_used.append("redis://127.0.0.1:6379")
        yield "redis://127.0.0.1:6379"
    else:
        async with RedisServer() as server:
            redis_used.append(f"{server.url} (a private redis-server)")
            yield server.url


@pytest.fixture
async def queue_name(redis_url: str) -> AsyncIterator[str]:
    """An arq queue name of this test's own; its keys are deleted afterwards."""
    name = f"abadges:test:{uuid.uuid4().hex[:12]}"
    yield name
    # Every key a job or a worker of the queue made carries its name (the job ids do): the
    # shared Redis is left as it was, killed workers' health keys included.
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{name}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A private redis-server, for tests that stop it."""
    async with RedisServer() as server:
        yield server


@pytest.fixture
async def registry(
    database_url: str, redis_url: str, queue_name: str
) -> AsyncIterator[BadgeRegistry]:
    """A connected registry with no badges over an empty awards table and an empty queue."""
    registry = BadgeRegistry()
    registry.configure(
        database_url=database_url,
        redis_url=redis_url,
        queue_name=queue_name,
        # Deleted with the queue's keys (see `queue_name`).
        notices_stream=f"{queue_name}:changes",
    )
    async with registry.lifespan():
        await registry.create_tables()
        await registry.database.execute(awards.delete())
        await registry.database.execute(history.delete())
        await registry.database.execute(backfills.delete())
        # Zero by now (the triggers follow the deletes), but left rows of users of earlier tests.
        await registry.database.execute(totals.delete())
        await registry.database.execute(level_counts.delete())
        yield registry


@pytest.fixture
async def stored_rows(database_url: str, registry: BadgeRegistry) -> AsyncIterator[Rows]:
    """Read the awards table through a connection of its own, to see only committed rows."""
    database = databases.Database(database_url)
    await database.connect()

    async def read() -> list[tuple[str, str, int]]:
        query = sa.select(awards.c.user_id, awards.c.slug, awards.c.level).order_by(awards.c.id)
        return [
            (text(row[0]), text(row[1]), int(row[2])) for row in await database.fetch_all(query)
        ]

    yield read
    await database.disconnect()


def _text(value: str | bytes) -> str:
    # The MySQL columns are VARBINARY (see abadges/tables.py) and come back as bytes.
    return value.decode() if isinstance(value, bytes) else value


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    seen = ", ".join(dict.fromkeys(exercised)) or "none"
    terminalreporter.write_line(f"abadges: databases exercised: {seen}")
    terminalreporter.write_line(f"abadges: redis: {', '.join(redis_used) or 'not used'}")


def text(value: str | bytes) -> str:
    """A text column as read back: the MySQL columns are VARBINARY, and come back as bytes."""
    return value.decode() if isinstance(value, bytes) else value
