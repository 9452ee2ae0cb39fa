"""The award store: recorded awards in SQLite, PostgreSQL or MySQL/MariaDB through `databases`."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import anyio
import databases
import sqlalchemy as sa
from databases.interfaces import Record
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateIndex, CreateTable

from .awards import Award
from .base import BadgeDetail
from .exceptions import ConfigurationError
from .tables import awards

UTC = datetime.UTC
DIALECTS = frozenset({"sqlite", "postgresql", "mysql"})


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
        # asyncpg's pool runs a reset query (RESET ALL, UNLISTEN *, ...) on every release: a
        # second round trip for each event's one insert. abadges leaves no session state
        # behind; asyncpg still rolls back a transaction left open. See storage.md.
        options: dict[str, Any] = {"reset": _keep_session} if self.dialect == "postgresql" else {}
        try:
            self.database = databases.Database(url, **options)
        except ImportError as exc:
            raise ConfigurationError(
                f"The database URL {url.obscure_password!r} needs the driver {exc.name!r}, "
                f"which is not installed: pip install 'abadges[{self.dialect}]'."
            ) from exc
        self._describe = describe
        self._held: databases.core.Connection | None = None
        self._held_lock = anyio.Lock()

    async def connect(self) -> None:
        await self.database.connect()
        if self.dialect == "sqlite":
            # databases' SQLite "pool" opens a new connection, and a new thread, for every
            # unit of work, which costs more than the work: keep one open, one user at a time
            # (SQLite writes one at a time anyway).
            held = databases.core.Connection(self.database, self.database._backend)
            try:
                await held.__aenter__()
            except BaseException:
                await self.database.disconnect()
                raise
            self._held = held

    async def disconnect(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await held.__aexit__()
        await self.database.disconnect()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[databases.core.Connection]:
        """A connection for one unit of work: the held one on SQLite, else a pooled one."""
        if self._held is not None:
            async with self._held_lock:
                yield self._held
            return
        # A Connection of its own, not the task's (database.connection()): when a release
        # fails, on a connection the server ended, databases keeps the Connection marked
        # acquired, and every later query through it fails with "Connection is already
        # acquired" (encode/databases#416). The task's own would carry that to its next call.
        async with databases.core.Connection(self.database, self.database._backend) as connection:
            yield connection

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
        ordered = sorted(new_awards, key=lambda a: (a.slug, a.level, a.award_key))
        # One statement text, written once, instead of a SQLAlchemy insert compiled on every
        # call (that compiling took half of an event's time).
        if self.dialect == "postgresql":
            # asyncpg prepares the text once per connection; unnest() keeps it the same for
            # any number of rows. The pool is asyncpg's own, without databases' per-task
            # connection bookkeeping around it: the insert is the whole unit of work.
            columns = [[getattr(a, name) for a in ordered] for name in _COLUMNS]
            async with self.database._backend._pool.acquire() as raw:
                records = await raw.fetch(_POSTGRESQL_INSERT, *columns)
        elif self.dialect == "sqlite":
            records = []
            async with self.connection() as connection:
                for start in range(0, len(ordered), _SQLITE_ROWS):
                    chunk = ordered[start : start + _SQLITE_ROWS]
                    values = [value for award in chunk for value in _sqlite_values(award)]
                    # One trip to aiosqlite's thread, not three (execute, fetch, close).
                    records += await connection.raw_connection.execute_fetchall(
                        _sqlite_insert(len(chunk)), values
                    )
        else:
            async with self.connection() as connection:
                return [
                    award
                    for values in map(self._mysql_values, ordered)
                    if (award := await self._insert_mysql(connection, values)) is not None
                ]
        ids = {(row[1], row[2], row[3], row[4]): int(row[0]) for row in records}
        return [
            self._recorded(award, ids[key])
            for award in ordered
            if (key := (award.user_id, award.slug, award.level, award.award_key)) in ids
        ]

    def _recorded(self, award: NewAward, id: int) -> Award:
        detail = self._describe(award.slug, award.level)
        return Award(
            id=id,
            user_id=award.user_id,
            slug=award.slug,
            level=award.level,
            name=detail.name if detail else None,
            description=detail.description if detail else None,
            awarded_at=award.awarded_at.astimezone(UTC),
        )

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

    @staticmethod
    def _mysql_values(award: NewAward) -> dict[str, Any]:
        values = dataclasses.asdict(award)
        # MySQL stores datetimes without a zone: store UTC, naive.
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


async def _keep_session(connection: object) -> None:
    """The pool's reset: nothing beyond asyncpg's rollback of an open transaction."""


_COLUMNS = ("user_id", "slug", "level", "awarded_at", "award_key")
_RETURNING = "RETURNING id, user_id, slug, level, award_key"
_POSTGRESQL_INSERT = (
    f"INSERT INTO {awards.name} ({', '.join(_COLUMNS)}) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::timestamptz[], $5::text[]) "
    f"ON CONFLICT DO NOTHING {_RETURNING}"
)
#: Rows per SQLite insert: 5 parameters each, under SQLite's oldest limit of 999.
_SQLITE_ROWS = 150


@functools.cache
def _sqlite_insert(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO {awards.name} ({', '.join(_COLUMNS)}) VALUES {values} "
        f"ON CONFLICT DO NOTHING {_RETURNING}"
    )


def _sqlite_values(award: NewAward) -> tuple[str, str, int, str, str]:
    # The text SQLAlchemy's SQLite DateTime stores, in UTC, so that its queries read it back.
    at = award.awarded_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return (award.user_id, award.slug, award.level, at, award.award_key)


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
