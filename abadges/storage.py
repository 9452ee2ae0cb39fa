"""The award store: recorded awards in SQLite, PostgreSQL or MySQL/MariaDB through `databases`."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import databases
import sqlalchemy as sa
from databases.interfaces import Record
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from .base import BadgeDetail
from .exceptions import ConfigurationError
from .tables import awards

__all__ = ["Award", "AwardStore", "NewAward"]

UTC = datetime.UTC
DIALECTS = frozenset({"sqlite", "postgresql", "mysql"})


@dataclasses.dataclass(frozen=True)
class Award:
    """A recorded award. `name` and `description` are those of the awarded level, or None when
    the badge or the level is no longer registered."""

    id: int
    user_id: str
    slug: str
    level: int
    name: str | None
    description: str | None
    awarded_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class NewAward:
    """An award about to be recorded."""

    user_id: str
    slug: str
    level: int
    awarded_at: datetime.datetime
    award_key: str = ""


Describe = Callable[[str, int], BadgeDetail | None]


class AwardStore:
    """Records and queries awards. One store per database URL; `describe` names the levels."""

    def __init__(self, database_url: str, describe: Describe) -> None:
        url = databases.DatabaseURL(database_url)
        self.dialect = "postgresql" if url.dialect == "postgres" else url.dialect
        if self.dialect not in DIALECTS:
            raise ConfigurationError(
                f"The database URL {url.obscure_password!r} is not supported; abadges works with "
                "sqlite+aiosqlite://, postgresql+asyncpg:// and mysql+asyncmy:// URLs."
            )
        try:
            self.database = databases.Database(url)
        except ImportError as exc:
            raise ConfigurationError(
                f"The database URL {url.obscure_password!r} needs the driver {exc.name!r}, "
                f"which is not installed: pip install 'abadges[{self.dialect}]'."
            ) from exc
        self._describe = describe

    async def connect(self) -> None:
        await self.database.connect()

    async def disconnect(self) -> None:
        await self.database.disconnect()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[databases.core.Connection]:
        """A pooled connection for one unit of work."""
        connection = self.database.connection()
        try:
            async with connection:
                yield connection
        finally:
            # databases 0.9 keeps a connection whose release failed (its server had ended it)
            # attached to the task, marked acquired, and every later query of that task fails
            # with "Connection is already acquired" (encode/databases#416); seen here under
            # pg_terminate_backend. Drop it: the task's next unit of work gets a fresh one.
            released = getattr(connection._connection, "_connection", None) is None
            if connection._connection_counter == 0 and not released:
                self.database._connection = None

    async def create_tables(self) -> None:
        """Create the awards table and its indexes where they are missing."""
        indexes = sorted(awards.indexes, key=lambda index: str(index.name))
        async with self.connection() as connection:
            if self.dialect == "mysql":
                await self._create_tables_mysql(connection, indexes)
                return
            await connection.execute(CreateTable(awards, if_not_exists=True))
            for index in indexes:
                await connection.execute(CreateIndex(index, if_not_exists=True))

    async def _create_tables_mysql(
        self, connection: databases.core.Connection, indexes: list[sa.Index]
    ) -> None:
        # MySQL (unlike MariaDB) has no CREATE INDEX IF NOT EXISTS, and an IF NOT EXISTS that
        # finds the table makes the driver log a warning: ask the catalogue instead.
        rows = await connection.fetch_all(
            sa.text(
                "SELECT DISTINCT index_name FROM information_schema.statistics "
                "WHERE table_schema = DATABASE() AND table_name = :table"
            ).bindparams(table=awards.name)
        )
        existing = {_text(row[0]) for row in rows}
        if not existing:
            await connection.execute(CreateTable(awards, if_not_exists=True))
        for index in indexes:
            if index.name not in existing:
                await connection.execute(CreateIndex(index))

    async def insert(self, new_awards: Sequence[NewAward]) -> list[Award]:
        """Record `new_awards`, skipping those the unique constraint already holds, in one
        statement (one per award on MySQL). Returns the awards recorded by this call."""
        if not new_awards:
            return []
        # A fixed order makes concurrent multi-row inserts take their row locks in the same
        # order, so two events that award the same levels cannot deadlock each other.
        rows = [
            self._values(award)
            for award in sorted(new_awards, key=lambda a: (a.slug, a.level, a.award_key))
        ]
        async with self.connection() as connection:
            if self.dialect == "mysql":
                return [
                    award
                    for values in rows
                    if (award := await self._insert_mysql(connection, values)) is not None
                ]
            dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
            statement = (
                dialect_insert(awards).values(rows).on_conflict_do_nothing().returning(*awards.c)
            )
            return [self._award(record) for record in await connection.fetch_all(statement)]

    async def _insert_mysql(
        self, connection: databases.core.Connection, values: dict[str, Any]
    ) -> Award | None:
        # A duplicate key turns the insert into a no-op update that returns 0. INSERT IGNORE
        # would do the same, but it also turns truncation into a warning, and the drivers follow
        # each warning with a SHOW WARNINGS round trip and a log line. The 0 relies on the
        # connection not setting the FOUND_ROWS client flag, which asyncmy does not set.
        statement = mysql.insert(awards).values(values)
        statement = statement.on_duplicate_key_update(id=awards.c.id)
        new_id = await connection.execute(statement)
        if not new_id:
            return None
        return self._award({**values, "id": new_id})

    async def awards_for(self, user_id: str) -> list[Award]:
        query = awards.select().where(awards.c.user_id == user_id)
        return await self._fetch_awards(query.order_by(*_newest_first()))

    async def count_for(self, user_id: str) -> int:
        query = sa.select(sa.func.count()).where(awards.c.user_id == user_id)
        async with self.connection() as connection:
            return int(await connection.fetch_val(query))

    async def holds(self, user_id: str, slug: str, level: int | None) -> bool:
        query = sa.select(awards.c.id).where(
            awards.c.user_id == user_id, *_badge_filter(slug, level)
        )
        async with self.connection() as connection:
            return await connection.fetch_one(query.limit(1)) is not None

    async def holders(self, slug: str, level: int | None, limit: int, offset: int) -> list[Award]:
        query = awards.select().where(*_badge_filter(slug, level)).order_by(*_newest_first())
        return await self._fetch_awards(query.limit(limit).offset(offset))

    async def counts(self) -> dict[tuple[str, int], int]:
        """How many awards each (slug, level) has, for those with at least one."""
        query = sa.select(awards.c.slug, awards.c.level, sa.func.count()).group_by(
            awards.c.slug, awards.c.level
        )
        async with self.connection() as connection:
            rows = await connection.fetch_all(query)
        return {(_text(row[0]), int(row[1])): int(row[2]) for row in rows}

    async def delete(self, user_id: str, slug: str, level: int | None) -> int:
        """Delete the user's awards of a badge (of one level, if given); return how many."""
        statement = awards.delete().where(awards.c.user_id == user_id, *_badge_filter(slug, level))
        async with self.connection() as connection:
            if self.dialect == "mysql":
                # The MySQL backends answer an execute() without an inserted id with rowcount.
                return int(await connection.execute(statement))
            # PostgreSQL answers execute() with None and SQLite with the last inserted id.
            return len(await connection.fetch_all(statement.returning(awards.c.id)))

    async def _fetch_awards(self, query: sa.Select[Any]) -> list[Award]:
        async with self.connection() as connection:
            return [self._award(record) for record in await connection.fetch_all(query)]

    def _values(self, award: NewAward) -> dict[str, Any]:
        values = dataclasses.asdict(award)
        if self.dialect != "postgresql":
            # SQLite and MySQL store datetimes without a zone: store UTC, naive.
            values["awarded_at"] = award.awarded_at.astimezone(UTC).replace(tzinfo=None)
        return values

    def _award(self, record: Record | Mapping[str, Any]) -> Award:
        slug = _text(record["slug"])
        level = int(record["level"])
        detail = self._describe(slug, level)
        awarded_at: datetime.datetime = record["awarded_at"]
        awarded_at = (
            awarded_at.replace(tzinfo=UTC) if awarded_at.tzinfo is None else awarded_at
        ).astimezone(UTC)
        return Award(
            id=int(record["id"]),
            user_id=_text(record["user_id"]),
            slug=slug,
            level=level,
            name=detail.name if detail else None,
            description=detail.description if detail else None,
            awarded_at=awarded_at,
        )


def _text(value: str | bytes) -> str:
    # The MySQL columns are VARBINARY (see tables.py) and come back as bytes.
    return value.decode() if isinstance(value, bytes) else value


def _badge_filter(slug: str, level: int | None) -> list[sa.ColumnElement[bool]]:
    conditions = [awards.c.slug == slug]
    if level is not None:
        conditions.append(awards.c.level == level)
    return conditions


def _newest_first() -> tuple[sa.UnaryExpression[Any], ...]:
    return (awards.c.awarded_at.desc(), awards.c.id.desc())
