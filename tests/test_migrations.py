"""abadges' Alembic migrations, on empty databases of each backend made for each test."""

from __future__ import annotations

import datetime
import pathlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import databases
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from abadges import (
    BadgeRegistry,
    ConfigurationError,
    MigrationStatus,
    SchemaError,
)
from abadges.storage import open_store
from abadges.storage._migrations import VERSION_TABLE, config
from abadges.storage.base import NewAward, Written
from abadges.tables import metadata
from tests.support.badges import RankBadge, ThanksBadge

UTC = datetime.UTC
START = datetime.datetime(2024, 1, 1, tzinfo=UTC)
DAY = datetime.timedelta(days=1)
ABADGES_TABLES = set(metadata.tables)


@pytest.fixture
async def empty_url(database_url: str, tmp_path: pathlib.Path) -> AsyncIterator[str]:
    """A URL to a database of its own for this test, empty, of `database_url`'s backend."""
    url = databases.DatabaseURL(database_url)
    if url.dialect == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    name = f"abadges_test_{uuid.uuid4().hex[:12]}"
    async with databases.Database(url) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield str(url.replace(database=name))
        finally:
            force = " WITH (FORCE)" if url.dialect == "postgresql" else ""
            await admin.execute(f"DROP DATABASE {name}{force}")


def _text(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(mysql.VARBINARY(4 * length), "mysql", "mariadb")


# The awards table exactly as abadges 0.1's tables.py declared it, frozen here: its
# create_tables() made it with these statements, and no version table.
FIRST_WAVE = sa.Table(
    "abadges_awards",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("user_id", _text(255), nullable=False),
    sa.Column("slug", _text(100), nullable=False),
    sa.Column("level", sa.SmallInteger(), nullable=False),
    sa.Column(
        "awarded_at",
        sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
        nullable=False,
    ),
    sa.Column("award_key", _text(64), nullable=False, server_default=""),
    sa.UniqueConstraint("user_id", "slug", "level", "award_key", name="abadges_awards_once"),
    sa.Index("abadges_awards_user", "user_id", "awarded_at"),
    sa.Index("abadges_awards_holders", "slug", "level", "awarded_at"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)


async def create_first_wave_table(url: str) -> None:
    async with databases.Database(url) as database:
        await database.execute(CreateTable(FIRST_WAVE, if_not_exists=True))
        for index in sorted(FIRST_WAVE.indexes, key=lambda index: str(index.name)):
            await database.execute(CreateIndex(index))


async def schema_differences(url: str) -> list[Any]:
    """What Alembic's autogenerate finds between the database and `abadges.tables.metadata`."""
    store = open_store(url, lambda slug, level: None)
    engine = create_async_engine(store.alembic_url(), poolclass=sa.NullPool)

    def compare(connection: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


async def tables(url: str) -> set[str]:
    store = open_store(url, lambda slug, level: None)
    engine = create_async_engine(store.alembic_url(), poolclass=sa.NullPool)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def connected(url: str) -> BadgeRegistry:
    registry = BadgeRegistry()
    registry.register(RankBadge)
    registry.register(ThanksBadge)
    registry.configure(database_url=url, queue="inline")
    return registry


async def migrate_at_once(registries: list[BadgeRegistry]) -> None:
    """Start every registry's migrate() together; each database ends up current."""
    async with anyio.create_task_group() as task_group:
        for registry in registries:
            task_group.start_soon(registry.migrate)
    for registry in registries:
        assert (await registry.migration_status()).is_current


async def test_migrate_creates_the_schema_of_tables_py(empty_url: str) -> None:
    async with connected(empty_url).lifespan() as registry:
        assert await registry.migration_status() == MigrationStatus(current=None, head="0007")
        await registry.migrate()
        status = await registry.migration_status()
        assert (status.current, status.is_current) == ("0007", True)
        [award] = await registry.possibly_award_badge("ranked", user="ana", level=2)
        assert await registry.awards_for("ana") == [award]
    assert await tables(empty_url) == {*ABADGES_TABLES, VERSION_TABLE}
    assert await schema_differences(empty_url) == []


async def test_a_first_wave_database_upgrades_in_place(empty_url: str) -> None:
    await create_first_wave_table(empty_url)
    # What abadges 0.1 recorded: it never migrated.
    rows = [
        ("ana", "rank", 1, ""),
        ("ana", "thanks", 1, "k1"),
        ("bo", "rank", 3, ""),
        ("ana", "thanks", 1, "k2"),
    ]
    async with databases.Database(empty_url) as database:
        for day, (user, slug, level, key) in enumerate(rows):
            at = START + datetime.timedelta(days=day)
            values = {"user_id": user, "slug": slug, "level": level, "award_key": key}
            await database.execute(FIRST_WAVE.insert().values(awarded_at=at, **values))
    async with connected(empty_url).lifespan() as registry:
        assert await registry.migration_status() == MigrationStatus(current=None, head="0007")
    assert await tables(empty_url) == {"abadges_awards"}

    async with connected(empty_url).lifespan() as registry:
        await registry.migrate()
        assert await registry.migration_status() == MigrationStatus(current="0007", head="0007")
        found = {
            user: [(a.slug, a.level, a.awarded_at) for a in await registry.awards_for(user)]
            for user in ("ana", "bo")
        }
        assert found == {
            "ana": [
                ("thanks", 1, START + 3 * DAY),
                ("thanks", 1, START + DAY),
                ("rank", 1, START),
            ],
            "bo": [("rank", 3, START + 2 * DAY)],
        }
        await registry.migrate()  # A no-op the second time.
        assert await registry.badge_count("ana") == 3
        # The unique constraint still holds, and the ids go on.
        assert await registry.possibly_award_badge("ranked", user="ana", level=1) == []
        [new] = await registry.possibly_award_badge("ranked", user="ana", level=2)
        assert new.id > len(rows)
    assert await tables(empty_url) == {*ABADGES_TABLES, VERSION_TABLE}
    assert await schema_differences(empty_url) == []


async def test_a_database_at_0001_upgrades_keeping_its_awards(empty_url: str) -> None:
    async with connected(empty_url).lifespan() as registry:
        await registry._connected_store().migrate("0001")
        # This version's queries need later revisions: they say so.
        with pytest.raises(SchemaError, match="it has no column 'revoked_at'"):
            await registry.awards_for("ana")
        with pytest.raises(SchemaError, match="older than this version of abadges"):
            await registry.revoke("ana", "thanks")
    async with databases.Database(empty_url) as database:
        values = {"user_id": "ana", "slug": "thanks", "level": 1, "award_key": "k1"}
        await database.execute(FIRST_WAVE.insert().values(awarded_at=START, **values))
        if databases.DatabaseURL(empty_url).dialect == "sqlite":
            # Development versions after 0.1.0 wrote years before 1000 without leading zeros;
            # a date without microseconds (written by hand, say) is left as it is.
            await database.execute(
                "INSERT INTO abadges_awards (user_id, slug, level, awarded_at, award_key) "
                "VALUES ('ana', 'thanks', 1, '999-01-01 08:30:00.000000', 'k0'), "
                "('ana', 'thanks', 1, '99-01-01 08:30:00.000000', 'k00'), "
                "('ana', 'thanks', 1, '2023-01-01 08:30:00', 'k-1')"
            )
    async with connected(empty_url).lifespan() as registry:
        await registry.migrate()
        found = [a.awarded_at for a in await registry.awards_for("ana")]
        sqlite = databases.DatabaseURL(empty_url).dialect == "sqlite"
        at = [datetime.datetime(year, 1, 1, 8, 30, tzinfo=UTC) for year in (2023, 999, 99)]
        assert found == ([START, *at] if sqlite else [START])
        # Revision 0003 gives each existing award its "granted" row, dated when it was awarded.
        history = await registry.history("ana")
        by_id = sorted(await registry.awards_for("ana"), key=lambda a: a.id, reverse=True)
        assert [(c.action, c.source, c.at) for c in history] == [
            ("granted", "event", a.awarded_at) for a in by_id
        ]
        assert {a.source for a in await registry.awards_for("ana")} == {"event"}
        assert await registry.revoke("ana", "thanks") == len(found)
        # Revoked, and the keys stay taken.
        assert await registry.badge_count("ana") == 0
        store = registry._connected_store()
        assert await store.insert([NewAward("ana", "thanks", 1, START, "k1")]) == Written()
        assert await registry.badge_count("ana") == 0
    assert await schema_differences(empty_url) == []


async def test_0007_counts_the_awards_held_before_it_as_seen(empty_url: str) -> None:
    async with connected(empty_url).lifespan() as registry:
        await registry._connected_store().migrate("0006")
        await registry._connected_store().insert([NewAward("ana", "rank", 2, START)])
        # Before 0007 the unseen list says what to run.
        with pytest.raises(SchemaError, match="it has no column 'seen_at'"):
            await registry.unseen("ana")
        await registry.migrate()
        assert await registry.unseen("ana") == []
        [new] = await registry.possibly_award_badge("ranked", user="ana", level=3)
        assert await registry.unseen("ana") == [new]
        assert await registry.mark_seen("ana") == 1
        assert await registry.unseen("ana") == []
    assert await schema_differences(empty_url) == []


async def test_0003_writes_the_history_of_awards_revoked_before_it(empty_url: str) -> None:
    async with connected(empty_url).lifespan() as registry:
        await registry._connected_store().migrate("0002")
    async with databases.Database(empty_url) as database:
        for key, revoked_at in (("k1", START + DAY), ("k2", None)):
            values = {"user_id": "ana", "slug": "thanks", "level": 1, "award_key": key}
            await database.execute(
                "INSERT INTO abadges_awards (user_id, slug, level, award_key, awarded_at, "
                "revoked_at) VALUES (:user_id, :slug, :level, :award_key, :at, :revoked_at)",
                {
                    **values,
                    "at": START.replace(tzinfo=None),
                    "revoked_at": revoked_at and revoked_at.replace(tzinfo=None),
                },
            )
    async with connected(empty_url).lifespan() as registry:
        await registry.migrate()
        history = await registry.history("ana")
        assert [(c.action, c.at) for c in history] == [
            ("revoked", START + DAY),
            ("granted", START),
            ("granted", START),
        ]
        assert await registry.badge_count("ana") == 1


async def test_a_first_wave_table_missing_an_index_gets_it(empty_url: str) -> None:
    async with databases.Database(empty_url) as database:
        await database.execute(CreateTable(FIRST_WAVE))
        [user_index] = [i for i in FIRST_WAVE.indexes if i.name == "abadges_awards_user"]
        await database.execute(CreateIndex(user_index))
    differences = {(d[0], d[-1].name) for d in await schema_differences(empty_url)}
    # What the later revisions add, and the index that the first one finds missing.
    assert differences == {
        ("add_table", "abadges_history"),
        ("add_table", "abadges_backfills"),
        ("add_table", "abadges_totals"),
        ("add_table", "abadges_level_counts"),
        *[("add_index", f"abadges_history_{i}") for i in ("user", "badge")],
        *[("add_index", f"abadges_totals_{i}") for i in ("points", "awards")],
        *[
            ("add_column", c)
            for c in (
                "revoked_at",
                "source",
                "granted_by",
                "reason",
                "expires_at",
                "points",
                "seen_at",
            )
        ],
        ("add_index", "abadges_awards_holders"),
        ("add_index", "abadges_awards_expiry"),
        ("add_index", "abadges_awards_time"),
        ("add_index", "abadges_awards_unseen"),
    }
    async with connected(empty_url).lifespan() as registry:
        await registry.create_tables()  # The alias of migrate().
    assert await schema_differences(empty_url) == []


async def test_concurrent_migrations_take_turns(empty_url: str) -> None:
    """Each registry migrates on connections of its own; without the lock, two of them would
    both find no table and one of the CREATE TABLEs would fail."""
    registries = [connected(empty_url) for _ in range(4)]
    for registry in registries:
        await registry.connect()
    try:
        await migrate_at_once(registries)
        assert len(await registries[0].possibly_award_badge("ranked", user="ana", level=1)) == 1
    finally:
        for registry in registries:
            await registry.disconnect()
    assert await schema_differences(empty_url) == []


async def test_downgrade_to_base_removes_the_table(empty_url: str) -> None:
    async with connected(empty_url).lifespan() as registry:
        await registry.migrate()
    store = open_store(empty_url, lambda slug, level: None)
    engine = create_async_engine(store.alembic_url(), poolclass=sa.NullPool)

    def downgrade(connection: sa.Connection) -> None:
        with connection.begin():
            command.downgrade(config(connection), "base")

    try:
        async with engine.connect() as connection:
            await connection.run_sync(downgrade)
    finally:
        await engine.dispose()
    assert await tables(empty_url) == {VERSION_TABLE}
    async with connected(empty_url).lifespan() as registry:
        assert await registry.migration_status() == MigrationStatus(current=None, head="0007")


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.possibly_award_badge("ranked", user="ana", level=1),
        lambda r: r.possibly_award_badge("thanked", user="ana"),
        lambda r: r.awards_for("ana"),
        lambda r: r.badge_count("ana"),
        lambda r: r.has_badge("ana", "rank"),
        lambda r: r.holders("rank"),
        lambda r: r.award_counts(),
        lambda r: r.revoke("ana", "rank"),
    ],
)
async def test_a_missing_table_says_to_migrate(empty_url: str, call: Any) -> None:
    async with connected(empty_url).lifespan() as registry:
        with pytest.raises(SchemaError) as caught:
            await call(registry)
    message = str(caught.value)
    assert message == (
        "The table 'abadges_awards' does not exist in the database "
        f"{databases.DatabaseURL(empty_url).obscure_password!r}: run `await badges.migrate()` "
        "or `abadges db upgrade` to create it."
    )
    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.__cause__ is not None
    assert "abadges_awards" in str(caught.value.__cause__)


def test_the_missing_table_error_obscures_the_password() -> None:
    store = open_store("postgresql+asyncpg://app:secret@db.example/app", lambda s, level: None)
    message = str(store.schema_error())
    assert "'postgresql+asyncpg://app:********@db.example/app'" in message
    assert "secret" not in message


async def test_other_database_errors_pass_through(empty_url: str) -> None:
    """A table of that name without abadges' columns: the driver's error, not SchemaError."""
    async with databases.Database(empty_url) as database:
        await database.execute("CREATE TABLE abadges_awards (id INTEGER PRIMARY KEY)")
    async with connected(empty_url).lifespan() as registry:
        store = registry._connected_store()
        for call in (
            store.insert([NewAward("ana", "rank", 1, START)]),
            registry.badge_count("ana"),
        ):
            with pytest.raises(Exception) as caught:
                await call
            assert not isinstance(caught.value, SchemaError)
            assert "user_id" in str(caught.value)


@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_a_held_mysql_migration_lock_times_out(empty_url: str) -> None:
    async with databases.Database(empty_url) as other, other.connection() as connection:
        assert await connection.fetch_val("SELECT GET_LOCK('abadges_migrations', 0)") == 1
        async with connected(empty_url).lifespan() as registry:
            registry._connected_store().migration_lock_timeout = 1  # type: ignore[attr-defined]
            with pytest.raises(TimeoutError, match="held the migration lock 'abadges_migrations'"):
                await registry.migrate()
            assert (await registry.migration_status()).current is None
        await connection.execute("SELECT RELEASE_LOCK('abadges_migrations')")


def test_alembic_urls_use_the_async_drivers_without_pool_options() -> None:
    cases = {
        "postgresql://u:p@h/db?min_size=1&max_size=3&ssl=disable": (
            "postgresql+asyncpg://u:p@h/db?ssl=disable"
        ),
        "postgres://u@h/db": "postgresql+asyncpg://u@h/db",
        "mysql+asyncmy://u@h/db?pool_recycle=60": "mysql+asyncmy://u@h/db",
        "sqlite+aiosqlite:///a.sqlite3": "sqlite+aiosqlite:///a.sqlite3",
    }
    for database_url, expected in cases.items():
        url = open_store(database_url, lambda s, level: None).alembic_url()
        assert url.render_as_string(hide_password=False) == expected


def test_the_migrations_refuse_to_run_from_the_alembic_command() -> None:
    with pytest.raises(RuntimeError, match=r"run through `await badges\.migrate\(\)`"):
        command.upgrade(config(), "head")


async def test_one_process_migrates_several_databases_at_once(tmp_path: pathlib.Path) -> None:
    """Alembic's `context` and `op` are module-wide: runs in one process take turns."""
    urls = [f"sqlite+aiosqlite:///{tmp_path / f'{n}.sqlite3'}" for n in range(4)]
    registries = [connected(url) for url in urls]
    for registry in registries:
        await registry.connect()
    try:
        await migrate_at_once(registries)
    finally:
        for registry in registries:
            await registry.disconnect()
