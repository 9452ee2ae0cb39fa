"""The example site's database and environment, for the tests of the example apps, and the
browser of the browser tests."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest
from selenium import webdriver

from abadges import badges
from abadges.tables import awards, metadata
from examples import store
from tests.support.browser import start_browser

ROOT = pathlib.Path(__file__).parents[2]


@pytest.fixture
async def site_env(
    database_url: str,
    redis_url: str,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> dict[str, str]:
    """Empty example tables in `database_url`; the environment of the app and the worker. The
    site signs its credentials with its demo key (see `examples/credentials.py`): next to a
    SQLite database, else in the current directory, which is the test's own."""
    monkeypatch.chdir(tmp_path)
    for variable in ("EXAMPLE_PUBLIC_URL", "EXAMPLE_SIGNING_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ABADGES_DATABASE_URL", database_url)
    monkeypatch.setenv("ABADGES_REDIS_URL", redis_url)
    monkeypatch.setenv("ABADGES_QUEUE_NAME", queue_name)
    async with badges.lifespan():
        await store.create_tables()
        # Every table of abadges and the site's. The awards go first: deleting them updates the
        # totals and level counts that triggers keep, which are emptied after.
        first = [awards, *(table for table in metadata.sorted_tables if table is not awards)]
        for table in [*first, store.users, store.visits]:
            await badges.database.execute(table.delete())
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ABADGES_BADGES": "examples.badges",
        "ABADGES_USER_LOADER": "examples.store:load_user",
    }


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium (see `tests/support/browser.py`)."""
    with start_browser(tmp_path) as driver:
        yield driver
