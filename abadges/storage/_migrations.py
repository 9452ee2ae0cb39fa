"""Running abadges' Alembic migrations (in `migrations/`, shipped as package data).

Alembic works on a SQLAlchemy connection: each run opens an `AsyncEngine` on the same database,
with the async driver of the `databases` URL, runs Alembic in `run_sync()`, and disposes it.

Alembic is imported when a migration or a status is asked for, not with abadges: with Mako and
Pygments behind it, it is a sixth of a worker's memory, and a worker never migrates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pathlib
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

#: abadges' own version table, so that its revisions never mix with an app's Alembic.
VERSION_TABLE = "abadges_alembic_version"
MIGRATIONS = pathlib.Path(__file__).with_name("migrations")

if TYPE_CHECKING:
    from alembic.config import Config

Lock = Callable[[sa.Connection], contextlib.AbstractContextManager[None]]


def config(connection: sa.Connection | None = None) -> Config:
    """The Alembic configuration of abadges' migrations; env.py runs them on `connection`."""
    from alembic.config import Config

    alembic = Config()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    alembic.attributes["connection"] = connection
    return alembic


@functools.cache
def head() -> str:
    """The latest revision abadges ships."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None, "abadges ships no migrations"
    return revision


async def run(url: sa.URL, connect_args: Mapping[str, Any], lock: Lock, revision: str) -> None:
    """Upgrade the database at `url` to `revision` under `lock`, in one transaction where the
    database has transactional DDL (PostgreSQL, SQLite). The driver connects with
    `connect_args` beside the URL's."""

    from alembic import command

    def upgrade(connection: sa.Connection) -> None:
        with connection.begin(), lock(connection):
            command.upgrade(config(connection), revision)

    # Alembic's `context` and `op` are module-wide proxies: two runs interleaving in one
    # process (two databases migrated at once) would run one's migrations on the other's
    # connection. The database's lock orders processes; this one orders the tasks of a loop.
    async with _process_lock(), _connect(url, connect_args, write=True) as connection:
        await connection.run_sync(upgrade)


async def current(url: sa.URL, connect_args: Mapping[str, Any]) -> str | None:
    """The revision the database at `url` is at; None without abadges' version table."""
    from alembic.runtime.migration import MigrationContext

    def read(connection: sa.Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    async with _connect(url, connect_args, write=False) as connection:
        return await connection.run_sync(read)


_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


@contextlib.asynccontextmanager
async def _connect(
    url: sa.URL, connect_args: Mapping[str, Any], *, write: bool
) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(url, poolclass=sa.NullPool, connect_args=dict(connect_args))
    if write and engine.dialect.name == "sqlite":
        _begin_immediate(engine)
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()


def _begin_immediate(engine: AsyncEngine) -> None:
    # SQLAlchemy's recipe for SQLite transactions (its aiosqlite dialect docs): the driver's
    # own transaction handling off, and BEGIN emitted by SQLAlchemy. IMMEDIATE takes the write
    # lock first, so a second process migrating at once waits for the first (up to the busy
    # timeout), then finds the work done, instead of both reading "no table" and one failing.
    @sa.event.listens_for(engine.sync_engine, "connect")
    def autocommit(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine.sync_engine, "begin")
    def begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
