"""The store for SQLite, over aiosqlite."""

from __future__ import annotations

import contextlib
import datetime
import functools
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import anyio
import databases

from ..awards import Award
from ..tables import awards, history
from ._databases import new_connection
from .base import COLUMNS, RETURNING, Describe, NewAward, Store, Written, ordered

#: Rows per insert: a parameter per column each, under SQLite's oldest limit of 999.
ROWS_PER_INSERT = 999 // len(COLUMNS)


class SQLiteStore(Store):
    """Awards in an SQLite file, over one connection held while connected."""

    dialect = "sqlite"
    alembic_drivers: ClassVar[Mapping[str, str]] = {
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
    }

    def __init__(self, url: databases.DatabaseURL, describe: Describe) -> None:
        super().__init__(url, describe)
        self._held: databases.core.Connection | None = None
        self._held_lock = anyio.Lock()

    async def connect(self) -> None:
        await self.database.connect()
        # databases' SQLite "pool" opens a new connection, and a new thread, for every unit of
        # work, which costs more than the work: keep one open, one user at a time (SQLite
        # writes one at a time anyway).
        held = new_connection(self.database)
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
        """The held connection, one unit of work at a time."""
        async with self._held_lock:
            if self._held is None:  # Closed under a call that outlasted disconnect().
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            yield self._held

    @contextlib.asynccontextmanager
    async def transaction(self, connection: databases.core.Connection) -> AsyncIterator[object]:
        # BEGIN IMMEDIATE takes the write lock at once, waiting for it as long as the busy
        # timeout allows. A plain BEGIN takes it at the first write: after a read, another
        # process's write lock makes that fail at once with "database is locked".
        raw = connection.raw_connection
        await raw.execute("BEGIN IMMEDIATE")
        try:
            yield raw
            await raw.commit()
        except BaseException:
            # Also when the commit failed: the connection must not stay in the transaction.
            with anyio.CancelScope(shield=True):
                await raw.rollback()
            raise

    async def insert(self, new_awards: Sequence[NewAward]) -> Written:
        if not new_awards:
            return Written()
        awards_in_order = ordered(new_awards)
        async with self.connection() as connection:
            with self.translating_errors():
                # The awards and their history rows in one transaction.
                async with self.transaction(connection):
                    raw = connection.raw_connection
                    written = await self._inserting(
                        connection, awards_in_order, lambda chunk: self._insert(raw, chunk)
                    )
                    if written.ended:
                        expired = [_expired(award) for _, award in written.ended]
                        await raw.executemany(EXPIRED, expired)
                    if written.recorded:
                        await raw.executemany(GRANTED, [_granted(a) for a in written.recorded])
        return written

    async def _insert(self, raw: Any, awards_in_order: Sequence[NewAward]) -> list[Award]:
        records = []
        for start in range(0, len(awards_in_order), ROWS_PER_INSERT):
            chunk = awards_in_order[start : start + ROWS_PER_INSERT]
            values = [value for award in chunk for value in _values(award)]
            # One trip to aiosqlite's thread, not three (execute, fetch, close).
            records += await raw.execute_fetchall(_insert(len(chunk)), values)
        return self.returned(awards_in_order, records)

    async def lock(self, connection: databases.core.Connection, user_id: str, slug: str) -> None:
        """Nothing more: BEGIN IMMEDIATE took the write lock of the whole database."""

    def is_missing_table(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
            f"no such table: {awards.name}"
        )

    def is_missing_column(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such column: ")


@functools.cache
def _insert(rows: int) -> str:
    values = ", ".join([f"({', '.join('?' * len(COLUMNS))})"] * rows)
    return (
        f"INSERT INTO {awards.name} ({', '.join(COLUMNS)}) VALUES {values} "
        f"ON CONFLICT DO NOTHING {RETURNING}"
    )


GRANTED = (
    f"INSERT INTO {history.name} (award_id, user_id, slug, level, action, at, source, actor, "
    "reason) VALUES (?, ?, ?, ?, 'granted', ?, ?, ?, ?)"
)
EXPIRED = (
    f"INSERT INTO {history.name} (award_id, user_id, slug, level, action, at, source) "
    "VALUES (?, ?, ?, ?, 'expired', ?, ?)"
)


def _expired(award: Award) -> tuple[object, ...]:
    assert award.expires_at is not None
    return (
        award.id,
        award.user_id,
        award.slug,
        award.level,
        _text_datetime(award.expires_at),
        award.source,
    )


def _granted(award: Award) -> tuple[object, ...]:
    return (
        award.id,
        award.user_id,
        award.slug,
        award.level,
        _text_datetime(award.awarded_at),
        award.source,
        award.granted_by,
        award.reason,
    )


def _values(award: NewAward) -> tuple[object, ...]:
    expires_at = None if award.expires_at is None else _text_datetime(award.expires_at)
    return (
        award.user_id,
        award.slug,
        award.level,
        _text_datetime(award.awarded_at),
        award.award_key,
        award.source,
        award.granted_by,
        award.reason,
        expires_at,
        award.points,
    )


def _text_datetime(at: datetime.datetime) -> str:
    # The text SQLAlchemy's SQLite DateTime stores, in UTC, so that its queries read it back.
    # Not strftime("%Y"): it writes the year 999 as "999", which no query reads back.
    return at.astimezone(datetime.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
