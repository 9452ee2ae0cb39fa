"""PostgreSQL behind a real PgBouncer (Debian's `pgbouncer`, started on a free port by each
test): in transaction mode with `?statement_cache_size=0`, and in session mode with the pool
sized to PgBouncer's. Without the binary these tests skip, except under `CI=true`, where they
fail: `.ci/run` installs it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped]
import databases
import pytest

from abadges import Award, BadgeRegistry, ConfigurationError, is_transient
from abadges.storage import open_store
from tests.support import IN_CI
from tests.support.badges import RankBadge, ThanksBadge
from tests.support.pgbouncer import PgBouncer, find_pgbouncer

POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
#: Concurrent calls per test, through a pooler with this many server connections.
CALLS = 300
POOL_SIZE = 2


@pytest.fixture
def pgbouncer() -> str:
    """The `pgbouncer` binary."""
    binary = find_pgbouncer()
    if binary is None:
        message = "No pgbouncer binary: apt-get install pgbouncer (.ci/run installs it)."
        if IN_CI:
            pytest.fail(f"{message} CI must run the PgBouncer tests.")
        pytest.skip(message)
    return binary


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    """The name of a PostgreSQL database of this test's own, on `database_url`'s server."""
    name = f"abadges_test_{uuid.uuid4().hex[:12]}"
    async with databases.Database(database_url) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield name
        finally:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def registry_of(url: str) -> BadgeRegistry:
    registry = BadgeRegistry()
    registry.register(RankBadge)
    registry.register(ThanksBadge)
    registry.configure(database_url=url)
    return registry


async def fire(registry: BadgeRegistry) -> list[list[Award] | Exception]:
    """`CALLS` events at once, each for a user of its own: what each call returned or raised."""
    results: list[list[Award] | Exception] = [[] for _ in range(CALLS)]

    async def call(i: int) -> None:
        try:
            results[i] = await registry.possibly_award_badge(
                "ranked", user=f"user-{i}", level=i % 3 + 1
            )
        except Exception as exc:
            results[i] = exc

    with anyio.fail_after(60):
        async with anyio.create_task_group() as task_group:
            for i in range(CALLS):
                task_group.start_soon(call, i)
    return results


async def stored(database_url: str, name: str) -> list[tuple[str, int]]:
    """(user_id, level) of each award in the database `name`, read straight from PostgreSQL."""
    url = databases.DatabaseURL(database_url).replace(database=name)
    async with databases.Database(url) as database:
        rows = await database.fetch_all("SELECT user_id, level FROM abadges_awards")
    return sorted((row[0], row[1]) for row in rows)


def expected() -> list[tuple[str, int]]:
    return sorted((f"user-{i}", i % 3 + 1) for i in range(CALLS))


@POSTGRESQL
async def test_pgbouncer_in_transaction_mode_records_and_announces_every_award(
    database_url: str, empty_database: str, pgbouncer: str
) -> None:
    async with PgBouncer(pgbouncer, database_url, "transaction", POOL_SIZE) as pooler:
        registry = registry_of(pooler.url(empty_database, "?statement_cache_size=0"))
        announced: list[Award] = []
        registry.on_award(announced.append)
        async with registry.lifespan():
            await registry.migrate()
            assert (await registry.migration_status()).is_current
            results = await fire(registry)
            # The queries go through databases' connections, not asyncpg's pool directly.
            assert await registry.badge_count("user-4") == 1
            assert [a.level for a in await registry.awards_for("user-5")] == [3]
            assert (await registry.award_counts())["rank"] == {1: 100, 2: 100, 3: 100}
    failures = [result for result in results if isinstance(result, Exception)]
    assert failures == []
    assert sorted((a.user_id, a.level) for a in announced) == expected()
    assert await stored(database_url, empty_database) == expected()


@POSTGRESQL
async def test_without_the_option_pgbouncer_fails_calls_with_an_error_that_says_what_to_change(
    database_url: str, empty_database: str, pgbouncer: str
) -> None:
    async with PgBouncer(pgbouncer, database_url, "transaction", POOL_SIZE) as pooler:
        # Three app processes: within one, group commit sends the inserts one statement at a
        # time, which PgBouncer can keep on one server connection; three take turns on two.
        apps = [registry_of(pooler.url(empty_database)) for _ in range(3)]
        results: list[list[Award] | Exception] = []
        async with contextlib.AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.lifespan())
            await apps[0].migrate()
            for _ in range(3):

                async def fire_into(app: BadgeRegistry) -> None:
                    results.extend(await fire(app))

                async with anyio.create_task_group() as task_group:
                    for app in apps:
                        task_group.start_soon(fire_into, app)
    failures = [result for result in results if isinstance(result, Exception)]
    # asyncpg's named statements live on the server connection that prepared them, and
    # PgBouncer hands the next statement another one: calls fail.
    assert failures
    for failure in failures:
        assert isinstance(failure, ConfigurationError), repr(failure)
        assert "PgBouncer in transaction or statement mode" in str(failure)
        assert "Add ?statement_cache_size=0 to the database URL" in str(failure)
        # Before abadges translated it, the call raised asyncpg's own error.
        cause: Any = failure.__cause__
        assert isinstance(
            cause,
            asyncpg.exceptions.InvalidSQLStatementNameError
            | asyncpg.exceptions.DuplicatePreparedStatementError,
        ), repr(cause)
        # Retrying on the same URL would fail again, or pass by chance and hide the cause.
        assert not is_transient(failure)
    # The calls that did not fail recorded their awards, once: each award held was returned
    # by one call, and each user of a call that did not fail holds its level.
    recorded = sorted(
        (a.user_id, a.level) for result in results if isinstance(result, list) for a in result
    )
    held = await stored(database_url, empty_database)
    assert held == recorded
    passed = {f"user-{k % CALLS}" for k, result in enumerate(results) if isinstance(result, list)}
    assert {user for user, _ in held} == passed


@POSTGRESQL
async def test_pgbouncer_in_session_mode_works_with_the_pool_sized_to_its_own(
    database_url: str, empty_database: str, pgbouncer: str
) -> None:
    # Session mode gives each client connection a server connection for as long as it stays
    # open: abadges' pool (max_size) and migrate()'s one connection must fit in PgBouncer's.
    async with PgBouncer(pgbouncer, database_url, "session", POOL_SIZE + 1) as pooler:
        registry = registry_of(pooler.url(empty_database, f"?min_size=1&max_size={POOL_SIZE}"))
        async with registry.lifespan():
            await registry.migrate()
            results = await fire(registry)
            assert (await registry.migration_status()).is_current
    assert [result for result in results if isinstance(result, Exception)] == []
    assert await stored(database_url, empty_database) == expected()


def test_a_postgresql_url_passes_statement_cache_size_to_asyncpg_and_alembic() -> None:
    store = open_store(
        "postgresql+asyncpg://u@h/db?statement_cache_size=0&max_size=4", lambda slug, level: None
    )
    assert store.database_options()["statement_cache_size"] == 0
    # SQLAlchemy would pass the query string's text "0" on to asyncpg, which needs a number.
    assert store.alembic_url().render_as_string() == "postgresql+asyncpg://u@h/db"
    assert store.alembic_connect_args() == {"statement_cache_size": 0}
    plain = open_store("postgresql+asyncpg://u@h/db", lambda slug, level: None)
    assert "statement_cache_size" not in plain.database_options()
    assert plain.alembic_connect_args() == {}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "?prepared_statements=false",
            "has the option(s) ['prepared_statements'], which abadges does not pass on; a "
            "PostgreSQL URL may have ['min_size', 'max_size', 'ssl', 'statement_cache_size'].",
        ),
        (
            "?statement_cache_size=off",
            "statement_cache_size in the database URL 'postgresql+asyncpg://u:********@h/db"
            "?statement_cache_size=off' must be a whole number, 0 to turn asyncpg's prepared "
            "statements off; got 'off'.",
        ),
    ],
)
async def test_a_postgresql_url_option_that_would_be_ignored_is_refused_at_connect(
    query: str, message: str
) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=f"postgresql+asyncpg://u:secret@h/db{query}")
    with pytest.raises(ConfigurationError) as caught:
        await registry.connect()
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)
