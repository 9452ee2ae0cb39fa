"""The pytest plugin, run the way an app runs it: pytest sessions of their own (`pytester`) over
a small app's badges module and its tests.

The sessions run in this process, so that coverage sees the plugin's fixtures run, each with a
new `abadges.badges` (the app module registers its badges on it at import, and is imported again
by each session). One session runs in a subprocess, to see the installed entry point load where
pytest-asyncio cannot be imported.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import abadges
from abadges import BadgeRegistry, NotConnectedError

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[1]

APP_BADGES = """
from abadges import Badge, BadgeAwarded, badges

#: What the on_award callback saw: (user_id, slug, level) of each award.
announced = []


@badges.register
class PointsBadge(Badge):
    slug = "points"
    levels = ["Bronze", "Silver"]
    events = ["points_awarded"]

    def award(self, **state):
        if state["points"] >= 100:
            return BadgeAwarded(level=2)
        if state["points"] >= 10:
            return BadgeAwarded(level=1)


@badges.register
class WelcomeBadge(Badge):
    slug = "welcome"
    levels = ["Welcome"]
    events = ["signed_up"]
    deferred = True

    def freeze(self, **state):
        return {"via": state["via"]}

    async def award(self, **state):
        if state["via"] == "invitation":
            return BadgeAwarded()


@badges.on_award
def announce(award):
    announced.append((award.user_id, award.slug, award.level))


# A setting of the app's own, which the fixtures keep.
badges.configure(queue_name="app:queue")
settings_at_import = badges.settings
"""

APP_TESTS = """
import contextlib
import socket
import sqlite3

import pytest
import redis.asyncio
from arq.worker import Worker

import app_badges
from abadges import NotConnectedError, badges
from abadges.worker import worker_settings

MARK

#: The ports of the Redis servers that tests had.
ports = []


def stored(registry):
    # Straight from the file, to see what is in the scratch database itself.
    path = registry.settings.database_url.removeprefix("sqlite+aiosqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT user_id, slug, level FROM abadges_awards ORDER BY id").fetchall()


async def test_inline_and_deferred_badges_are_recorded(abadges_registry, tmp_path):
    app_badges.announced.clear()
    assert abadges_registry is badges
    assert badges.settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'abadges.sqlite3'}"
    assert (badges.settings.queue, badges.settings.queue_name) == ("inline", "app:queue")
    [bronze] = await badges.possibly_award_badge("points_awarded", user="ana", points=50)
    assert (bronze.slug, bronze.level) == ("points", 1)
    [welcome] = await badges.possibly_award_badge("signed_up", user=7, via="invitation")
    assert (welcome.user_id, welcome.slug) == ("7", "welcome")
    assert await badges.possibly_award_badge("signed_up", user=8, via="search") == []
    assert stored(badges) == [("ana", "points", 1), ("7", "welcome", 1)]
    assert app_badges.announced == [("ana", "points", 1), ("7", "welcome", 1)]


async def test_each_test_has_a_new_database(abadges_registry):
    assert stored(abadges_registry) == []
    assert await abadges_registry.badge_count("ana") == 0


async def test_the_settings_are_back_after_each_test():
    assert badges.settings == app_badges.settings_at_import
    with pytest.raises(NotConnectedError):
        badges.database


async def test_deferred_badges_wait_in_redis_for_the_worker(
    abadges_redis_registry, abadges_redis_server
):
    app_badges.announced.clear()
    assert abadges_redis_registry is badges
    settings = badges.settings
    assert (settings.queue, settings.redis_url) == ("redis", abadges_redis_server.url)
    assert await badges.possibly_award_badge("signed_up", user="ana", via="invitation") == []
    assert stored(badges) == []
    worker = Worker(**worker_settings(badges, burst=True, handle_signals=False))
    await worker.async_run()
    await worker.pool.aclose()
    assert stored(badges) == [("ana", "welcome", 1)]
    assert app_badges.announced == [("ana", "welcome", 1)]


async def test_a_redis_server_of_its_own(abadges_redis_server):
    client = redis.asyncio.Redis.from_url(abadges_redis_server.url)
    assert await client.ping()
    assert await client.dbsize() == 0
    await client.aclose()
    ports.append(abadges_redis_server.port)


async def test_the_redis_server_stops_after_its_test():
    [port] = ports
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert badges.settings == app_badges.settings_at_import
"""

INI = """
[pytest]
asyncio_mode = {mode}
asyncio_default_fixture_loop_scope = {scope}
asyncio_default_test_loop_scope = {scope}
filterwarnings = error
"""


@pytest.fixture
def default_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[BadgeRegistry]:
    """A new `abadges.badges` for the inner session, which the fixtures and the app see."""
    registry = BadgeRegistry()
    monkeypatch.setattr(abadges, "badges", registry)
    yield registry
    # Whatever the session did, it left the registry disconnected.
    with pytest.raises(NotConnectedError):
        registry.database  # noqa: B018


@pytest.mark.parametrize(
    ("mode", "scope"),
    [("auto", "function"), ("auto", "session"), ("strict", "function"), ("strict", "module")],
)
def test_the_fixtures_in_each_mode_and_loop_scope(
    pytester: pytest.Pytester, default_registry: BadgeRegistry, mode: str, scope: str
) -> None:
    pytester.makeini(INI.format(mode=mode, scope=scope))
    pytester.makepyfile(app_badges=APP_BADGES)
    mark = "pytestmark = pytest.mark.asyncio" if mode == "strict" else ""
    pytester.makepyfile(test_app=APP_TESTS.replace("MARK", mark))
    result = pytester.runpytest()
    result.assert_outcomes(passed=6)
    # The app's own setting is all that is left of the session.
    expected = dataclasses.replace(abadges.Settings.from_env(), queue_name="app:queue")
    assert default_registry.settings == expected


def test_a_project_points_the_fixtures_at_a_registry_of_its_own(
    pytester: pytest.Pytester, default_registry: BadgeRegistry
) -> None:
    pytester.makeini(INI.format(mode="auto", scope="function"))
    pytester.makeconftest(
        """
        import pytest

        from abadges import Badge, BadgeAwarded, BadgeRegistry

        other = BadgeRegistry()


        @other.register
        class VisitBadge(Badge):
            slug = "visit"
            levels = ["Visitor"]
            events = ["visited"]

            def award(self, **state):
                return BadgeAwarded()


        @pytest.fixture
        def abadges_app_registry():
            return other


        @pytest.fixture
        def abadges_database_url(tmp_path):
            return f"sqlite+aiosqlite:///{tmp_path / 'other.sqlite3'}"
        """
    )
    pytester.makepyfile(
        """
        import pytest

        from abadges import badges
        from conftest import other


        async def test_the_registry_of_the_project(abadges_registry, tmp_path):
            assert abadges_registry is other
            assert other.settings.database_url.endswith(str(tmp_path / "other.sqlite3"))
            [award] = await other.possibly_award_badge("visited", user="ana")
            assert award.slug == "visit"
            with pytest.raises(Exception, match="not connected"):
                badges.database


        async def test_one_registry_fixture_a_test(abadges_registry, abadges_redis_registry):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*The fixture abadges_redis_registry connects <abadges.registry.BadgeRegistry object"
            " at *>, which is connected already: a test takes one of abadges_registry and"
            " abadges_redis_registry, and nothing else may connect the registry before it.",
        ]
    )
    assert default_registry.settings == abadges.Settings.from_env()


def fixtures_listed(result: pytest.RunResult) -> list[str]:
    """The abadges fixtures that `pytest --fixtures` listed."""
    return re.findall(r"^(abadges_\w+)", result.stdout.str(), re.M)


def test_the_fixtures_are_listed_and_no_abadges_removes_them(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI.format(mode="auto", scope="function"))
    pytester.makepyfile("async def test_badges(abadges_registry): pass")
    listed = pytester.runpytest("--fixtures")
    assert sorted(fixtures_listed(listed)) == [
        "abadges_app_registry",
        "abadges_database_url",
        "abadges_redis_registry",
        "abadges_redis_server",
        "abadges_registry",
    ]
    result = pytester.runpytest("-p", "no:abadges")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'abadges_registry' not found*"])
    assert fixtures_listed(pytester.runpytest("-p", "no:abadges", "--fixtures")) == []


NO_ASYNCIO_TESTS = """
def test_the_registry(abadges_registry):
    pass


def test_the_redis_server(abadges_redis_server):
    pass


def test_the_redis_registry(abadges_redis_registry):
    pass


def test_the_database_url(abadges_database_url, tmp_path):
    assert abadges_database_url == f"sqlite+aiosqlite:///{tmp_path / 'abadges.sqlite3'}"
"""


def check_without_pytest_asyncio(result: pytest.RunResult) -> None:
    result.assert_outcomes(passed=1, failed=0, errors=3)
    for name in ("abadges_registry", "abadges_redis_server", "abadges_redis_registry"):
        result.stdout.fnmatch_lines(
            [
                f"*The fixture {name} needs pytest-asyncio, which is not installed: "
                "`pip install pytest-asyncio`."
            ]
        )


def test_without_pytest_asyncio_the_fixtures_say_to_install_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy of the plugin, imported where pytest_asyncio cannot be, stands in for the
    # installed one (which was imported with pytest-asyncio, at the start of this run).
    spec = importlib.util.spec_from_file_location(
        "abadges.pytest_plugin_without_asyncio", ROOT / "abadges" / "pytest_plugin.py"
    )
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "pytest_asyncio", None)
        spec.loader.exec_module(plugin)
    assert not plugin.HAVE_PYTEST_ASYNCIO
    pytester.makepyfile(NO_ASYNCIO_TESTS)
    result = pytester.runpytest("-p", "no:asyncio", "-p", "no:abadges", plugins=[plugin])
    check_without_pytest_asyncio(result)
    listed = pytester.runpytest(
        "-p", "no:asyncio", "-p", "no:abadges", "--fixtures", plugins=[plugin]
    )
    listed.stdout.fnmatch_lines(["abadges_registry*", "*connected to*"])


def test_a_run_where_pytest_asyncio_cannot_be_imported_loads_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    # The installed entry point, in a process where `import pytest_asyncio` fails.
    pytester.mkpydir("pytest_asyncio").joinpath("__init__.py").write_text(
        "raise ImportError('pytest-asyncio is not installed here')\n"
    )
    pytester.makepyfile(NO_ASYNCIO_TESTS)
    check_without_pytest_asyncio(pytester.runpytest_subprocess("-p", "no:asyncio"))


def test_the_testing_page_is_a_test_suite_that_passes(
    pytester: pytest.Pytester, default_registry: BadgeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each block of docs/testing.md that starts with a file name comment, such as
    # `# test_badges.py`, is that file of a small project: written out, it passes.
    page = (ROOT / "docs" / "testing.md").read_text()
    files = {}
    for match in re.finditer(r"^```\w*\n# ([\w.]+\.(?:py|toml))\n(.*?)^```", page, re.S | re.M):
        name, text = match.groups()
        assert name not in files, f"docs/testing.md has two blocks named {name}."
        files[name] = text
    assert sorted(files) == [
        "app_badges.py",
        "conftest.py",
        "pyproject.toml",
        "test_badges.py",
        "test_worker.py",
    ]
    for name, text in files.items():
        pytester.path.joinpath(name).write_text(text)
        # This suite's own test_worker module must not stand in for the page's.
        monkeypatch.delitem(sys.modules, name.removesuffix(".py"), raising=False)
    tests = sum(text.count("\nasync def test_") for text in files.values())
    assert tests == 6
    result = pytester.runpytest("-W", "error")
    result.assert_outcomes(passed=tests)
