"""The store for PostgreSQL, over asyncpg."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa

from ..awards import Award
from ..tables import awards
from ._databases import asyncpg_pool
from .base import COLUMNS, RETURNING, NewAward, Store, ordered

#: The key of the advisory lock migrations take: "abadges" in ASCII.
MIGRATION_LOCK = 0x61626164676573
# asyncpg prepares the text once per connection; unnest() keeps it the same for any number of
# rows. One statement text, written once, instead of a SQLAlchemy insert compiled on every call
# (that compiling took half of an event's time).
INSERT = (
    f"INSERT INTO {awards.name} ({', '.join(COLUMNS)}) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::timestamptz[], $5::text[]) "
    f"ON CONFLICT DO NOTHING {RETURNING}"
)
# The SQLSTATE of "relation does not exist".
UNDEFINED_TABLE = "42P01"
# ... and of "column does not exist".
UNDEFINED_COLUMN = "42703"


class PostgreSQLStore(Store):
    """Awards in PostgreSQL: one `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`
    per event, straight on asyncpg's pool."""

    dialect = "postgresql"
    alembic_drivers: ClassVar[Mapping[str, str]] = {
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
    }

    def database_options(self) -> dict[str, Any]:
        # asyncpg's pool runs a reset query (RESET ALL, UNLISTEN *, ...) on every release: a
        # second round trip for each event's one insert. abadges leaves no session state
        # behind; asyncpg still rolls back a transaction left open. See storage.md.
        return {"reset": _keep_session}

    async def insert(self, new_awards: Sequence[NewAward]) -> list[Award]:
        if not new_awards:
            return []
        awards_in_order = ordered(new_awards)
        columns = [[getattr(a, name) for a in awards_in_order] for name in COLUMNS]
        with self.translating_errors():
            # The pool is asyncpg's own, without databases' per-task connection bookkeeping
            # around it: the insert is the whole unit of work.
            async with asyncpg_pool(self.database).acquire() as raw:
                records = await raw.fetch(INSERT, *columns)
        return self.returned(awards_in_order, records)

    def is_missing_table(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == UNDEFINED_TABLE

    def is_missing_column(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == UNDEFINED_COLUMN

    @contextlib.contextmanager
    def migration_lock(self, connection: sa.Connection) -> Iterator[None]:
        # Released when the migrations' transaction ends, committed or not.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        yield


async def _keep_session(connection: object) -> None:
    """The pool's reset: nothing beyond asyncpg's rollback of an open transaction."""
