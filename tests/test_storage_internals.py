"""The private attributes of `databases` that abadges/storage/_databases.py reaches into.

`databases` is pinned exactly (pyproject.toml) and unmaintained: when a release moves one of
these, these tests say which, before the stores fail in a less obvious way.
"""

from __future__ import annotations

import inspect

import databases
import databases.core
import pytest
from databases.backends.asyncmy import AsyncMyBackend
from databases.backends.postgres import PostgresBackend
from databases.backends.sqlite import SQLiteBackend

from abadges import BadgeRegistry
from abadges.storage import _databases

BACKENDS = {"sqlite": SQLiteBackend, "postgresql": PostgresBackend, "mysql": AsyncMyBackend}
CHANGED = "databases changed: abadges/storage/_databases.py relies on"


def test_connection_is_built_from_a_database_and_its_backend() -> None:
    parameters = list(inspect.signature(databases.core.Connection.__init__).parameters)
    assert parameters == ["self", "database", "backend"], (
        f"{CHANGED} databases.core.Connection(database, backend); its parameters are now "
        f"{parameters}."
    )


async def test_the_private_attributes_are_there(registry: BadgeRegistry) -> None:
    database = registry.database
    dialect = database.url.dialect
    backend = getattr(database, "_backend", None)
    assert isinstance(backend, BACKENDS[dialect]), (
        f"{CHANGED} Database._backend being a {BACKENDS[dialect].__name__}; it is {backend!r}."
    )
    assert _databases.backend(database) is backend

    connection = _databases.new_connection(database)
    assert isinstance(connection, databases.core.Connection)
    assert getattr(connection, "_backend", None) is backend, (
        f"{CHANGED} Connection(database, backend) using that backend."
    )
    async with connection:
        assert await connection.fetch_val("SELECT 1") == 1

    if dialect == "postgresql":
        asyncpg = pytest.importorskip("asyncpg")
        pool = getattr(backend, "_pool", None)
        assert isinstance(pool, asyncpg.Pool), (
            f"{CHANGED} PostgresBackend._pool being the asyncpg.Pool of a connected database; "
            f"it is {pool!r}."
        )
        assert _databases.asyncpg_pool(database) is pool
