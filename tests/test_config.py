from __future__ import annotations

from pathlib import Path

import pytest

from abadges import BadgeRegistry, Settings
from abadges.users import default_user_id


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite+aiosqlite:///abadges.sqlite3"
    assert settings.user_id is default_user_id


def test_environment_overrides_defaults() -> None:
    settings = Settings.from_env({"ABADGES_DATABASE_URL": "postgresql://db/app", "OTHER": "x"})
    assert settings.database_url == "postgresql://db/app"


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
    assert registry._store is None
