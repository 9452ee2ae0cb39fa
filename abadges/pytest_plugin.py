"""The pytest plugin: fixtures for an app's tests of its badges.

pytest loads it in every environment where abadges is installed (the `pytest11` entry point
`abadges`); `pytest -p no:abadges` turns it off. Its fixtures all start with `abadges_`, so
they never shadow an app's own:

- `abadges_registry`: `abadges.badges`, where an app registers its badges and its `on_award`
  callbacks, connected for one test to a new SQLite file with `queue="inline"` (deferred badges
  run in the call); its settings from before the test are back afterwards.
- `abadges_redis_server`: a private `redis-server` for the test alone
  (`abadges.testing.RedisServer`).
- `abadges_redis_registry`: the same registry with deferred badges queued in that server.
- `abadges_app_registry` and `abadges_database_url`: which registry and which database the two
  registry fixtures connect; override them in a `conftest.py` to test another registry, or on
  another database.

The async fixtures run on pytest-asyncio (in its strict and auto modes), in the event loop of
its `asyncio_default_fixture_loop_scope`. Without pytest-asyncio they are still defined, and
fail the tests that use them with a message saying to install it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import abadges

from .exceptions import NotConnectedError
from .registry import BadgeRegistry
from .testing import RedisServer

try:
    import pytest_asyncio
except ImportError:
    HAVE_PYTEST_ASYNCIO = False
else:
    HAVE_PYTEST_ASYNCIO = True


@pytest.fixture
def abadges_app_registry() -> BadgeRegistry:
    """The registry that `abadges_registry` and `abadges_redis_registry` connect:
    `abadges.badges`. Override this fixture to test another `BadgeRegistry`."""
    return abadges.badges


@pytest.fixture
def abadges_database_url(tmp_path: Path) -> str:
    """The database of `abadges_registry` and `abadges_redis_registry`: a new SQLite file in the
    test's `tmp_path`. Override this fixture to test on another database (an empty one)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'abadges.sqlite3'}"


@contextlib.asynccontextmanager
async def _connected(
    registry: BadgeRegistry, fixture: str, **settings: Any
) -> AsyncIterator[BadgeRegistry]:
    """`registry` configured with `settings`, connected and migrated; disconnected and its
    settings restored on exit."""
    try:
        registry.database  # noqa: B018
    except NotConnectedError:
        pass
    else:
        pytest.fail(
            f"The fixture {fixture} connects {registry!r}, which is connected already: a test "
            "takes one of abadges_registry and abadges_redis_registry, and nothing else may "
            "connect the registry before it.",
            pytrace=False,
        )
    with registry.configured(**settings):
        async with registry.lifespan():
            await registry.migrate()
            yield registry


def _needs_pytest_asyncio(function: Callable[..., Any]) -> Callable[[], None]:
    """A fixture in place of the async `function`, failing the tests that use it."""

    def fixture() -> None:
        pytest.fail(
            f"The fixture {function.__name__} needs pytest-asyncio, which is not installed: "
            "`pip install pytest-asyncio`.",
            pytrace=False,
        )

    fixture.__name__ = function.__name__
    fixture.__doc__ = function.__doc__
    return fixture


# The async fixtures set no loop scope of their own, so that they run in the loop of the
# project's asyncio_default_fixture_loop_scope, like its other fixtures. Without pytest-asyncio
# they are still defined: a test asking for one is told what to install, instead of hearing
# that no such fixture exists, and `pytest --fixtures` lists them.
def _async_fixture(function: Callable[..., Any]) -> Any:
    """`pytest_asyncio.fixture`, or without pytest-asyncio a fixture that says to install it."""
    if HAVE_PYTEST_ASYNCIO:
        return pytest_asyncio.fixture(function)
    return pytest.fixture(_needs_pytest_asyncio(function))


@_async_fixture
async def abadges_registry(
    abadges_app_registry: BadgeRegistry, abadges_database_url: str
) -> AsyncIterator[BadgeRegistry]:
    """`abadges_app_registry` (`abadges.badges`) connected to `abadges_database_url` (a new
    SQLite file), migrated, with `queue="inline"`: deferred badges run in the
    `possibly_award_badge()` call. The registry's settings from before the test are back
    afterwards."""
    settings = {"database_url": abadges_database_url, "queue": "inline"}
    async with _connected(abadges_app_registry, "abadges_registry", **settings) as registry:
        yield registry


@_async_fixture
async def abadges_redis_server() -> AsyncIterator[RedisServer]:
    """A private `redis-server` on a free 127.0.0.1 port, for this test only: the test may
    `stop()` and `start()` it. See `abadges.testing.RedisServer`."""
    async with RedisServer() as server:
        yield server


@_async_fixture
async def abadges_redis_registry(
    abadges_app_registry: BadgeRegistry,
    abadges_database_url: str,
    abadges_redis_server: RedisServer,
) -> AsyncIterator[BadgeRegistry]:
    """Like `abadges_registry`, but deferred badges are queued as jobs in
    `abadges_redis_server`, for a worker to run."""
    settings = {
        "database_url": abadges_database_url,
        "queue": "redis",
        "redis_url": abadges_redis_server.url,
    }
    async with _connected(abadges_app_registry, "abadges_redis_registry", **settings) as registry:
        yield registry
