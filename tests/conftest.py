"""Real databases for the suite.

SQLite always runs, on a temporary file. PostgreSQL and MariaDB run against the servers named by
`ABADGES_TEST_POSTGRES_URL` and `ABADGES_TEST_MYSQL_URL` (defaults: the local servers), each in
a scratch database that the session creates and drops. A server that does not answer skips its
tests with a notice, except under `CI=true`, where it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import anyio
import databases
import pytest
import sqlalchemy as sa
from support import Rows

from abadges import BadgeRegistry
from abadges.storage import _text
from abadges.tables import awards

SERVER_URLS = {
    "postgresql": os.environ.get(
        "ABADGES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("ABADGES_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test"),
}
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
exercised: list[str] = []


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


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[BadgeRegistry]:
    """A connected registry with no badges over an empty awards table."""
    registry = BadgeRegistry()
    registry.configure(database_url=database_url)
    async with registry.lifespan():
        await registry.create_tables()
        await registry._connected_store().database.execute(awards.delete())
        yield registry


@pytest.fixture
async def stored_rows(database_url: str, registry: BadgeRegistry) -> AsyncIterator[Rows]:
    """Read the awards table through a connection of its own, to see only committed rows."""
    database = databases.Database(database_url)
    await database.connect()

    async def read() -> list[tuple[str, str, int]]:
        query = sa.select(awards.c.user_id, awards.c.slug, awards.c.level).order_by(awards.c.id)
        return [
            (_text(row[0]), _text(row[1]), int(row[2])) for row in await database.fetch_all(query)
        ]

    yield read
    await database.disconnect()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    seen = ", ".join(dict.fromkeys(exercised)) or "none"
    terminalreporter.write_line(f"abadges: databases exercised: {seen}")
