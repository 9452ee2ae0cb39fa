from __future__ import annotations

from pathlib import Path

import pytest

from abadges import BadgeRegistry, ConfigurationError, Settings
from abadges.users import default_user_id


def test_defaults() -> None:
    assert Settings.from_env({}) == Settings(
        database_url="sqlite+aiosqlite:///abadges.sqlite3",
        redis_url="redis://localhost:6379",
        queue="redis",
        queue_name="abadges:queue",
        badges=(),
        user_id=default_user_id,
        user_loader=None,
        notices=None,
        notices_stream="abadges:changes",
        notices_maxlen=10000,
    )
    assert Settings.from_env({}).publishes_notices
    assert not Settings(queue="inline").publishes_notices


def test_environment_overrides_defaults() -> None:
    settings = Settings.from_env(
        {
            "ABADGES_DATABASE_URL": "postgresql://db/app",
            "ABADGES_REDIS_URL": "unix:///run/redis.sock",
            "ABADGES_QUEUE": "inline",
            "ABADGES_QUEUE_NAME": "app:badges",
            "ABADGES_BADGES": "app.badges, app.more_badges,",
            "ABADGES_USER_LOADER": "app.users:load",
            "OTHER": "x",
        }
    )
    assert settings == Settings(
        database_url="postgresql://db/app",
        redis_url="unix:///run/redis.sock",
        queue="inline",
        queue_name="app:badges",
        badges=("app.badges", "app.more_badges"),
        user_loader="app.users:load",
    )


@pytest.mark.parametrize(
    ("environ", "notices", "publishes"),
    [
        ({"ABADGES_NOTICES": " TRUE", "ABADGES_QUEUE": "inline"}, True, True),
        ({"ABADGES_NOTICES": "off"}, False, False),
        ({"ABADGES_NOTICES": "1"}, True, True),
        ({"ABADGES_NOTICES": "no"}, False, False),
    ],
)
def test_the_notices_settings_come_from_the_environment(
    environ: dict[str, str], notices: bool, publishes: bool
) -> None:
    settings = Settings.from_env(
        {**environ, "ABADGES_NOTICES_STREAM": "app:live", "ABADGES_NOTICES_MAXLEN": " 500 "}
    )
    assert (settings.notices, settings.publishes_notices) == (notices, publishes)
    assert (settings.notices_stream, settings.notices_maxlen) == ("app:live", 500)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"notices": "maybe"}, "notices must be None, True or False (ABADGES_NOTICES: one of"),
        ({"notices": 1}, "got 1."),
        ({"notices_stream": ""}, "notices_stream must be a non-empty str; got ''."),
        ({"notices_stream": 5}, "notices_stream must be a non-empty str; got 5."),
        ({"notices_maxlen": 0}, "notices_maxlen must be a whole number above 0; got 0."),
        ({"notices_maxlen": "ten"}, "notices_maxlen must be a whole number above 0; got 'ten'."),
        ({"notices_maxlen": True}, "got True."),
        ({"notices_maxlen": 2.5}, "got 2.5."),
    ],
)
def test_bad_notices_settings_are_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_a_bad_environment_variable_is_named() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"ABADGES_QUEUE": "celery", "ABADGES_DATABASE_URL": "sqlite://"})
    assert str(caught.value) == "queue must be one of ['redis', 'inline']; got 'celery'."
    assert caught.value.__notes__ == [
        "The ABADGES_* variables set: ['ABADGES_DATABASE_URL', 'ABADGES_QUEUE']."
    ]


def test_registry_reads_the_environment_when_it_connects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    registry = BadgeRegistry()
    monkeypatch.setenv("ABADGES_DATABASE_URL", "sqlite+aiosqlite:///from-env.sqlite3")
    assert registry.settings.database_url == "sqlite+aiosqlite:///from-env.sqlite3"
    registry.configure(database_url=f"sqlite+aiosqlite:///{tmp_path / 'configured.sqlite3'}")
    assert registry.settings.database_url.endswith("configured.sqlite3")


async def test_connect_twice_keeps_one_connection(tmp_path: Path) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=f"sqlite+aiosqlite:///{tmp_path / 'twice.sqlite3'}")
    async with registry.lifespan():
        store = registry._connected_store()
        await registry.connect()
        assert registry._connected_store() is store
    await registry.disconnect()
    assert registry._connection is None


SECRET = "p@ss/w:rd+="


def test_the_repr_of_settings_shows_no_password() -> None:
    quoted = "p%40ss%2Fw%3Ard%2B%3D"
    settings = Settings(
        database_url=f"postgresql+asyncpg://app:{quoted}@db/app",
        redis_url=f"rediss://:{quoted}@cache:6380/0?password={quoted}&ssl_cert_reqs=none",
    )
    text = repr(settings)
    assert quoted not in text
    assert "database_url='postgresql+asyncpg://app:***@db/app'" in text
    assert "redis_url='rediss://:***@cache:6380/0?password=***&ssl_cert_reqs=none'" in text


@pytest.mark.parametrize(
    "url", [f"redis:/:{SECRET}@cache", f"http://:{SECRET}@cache", f"cache?password={SECRET}"]
)
def test_a_malformed_redis_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(redis_url=url)
    message = str(caught.value)
    assert message.startswith("redis_url must start with one of ['redis://', 'rediss://', ")
    assert "w:rd" not in message
