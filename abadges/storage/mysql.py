"""The store for MySQL and MariaDB, over asyncmy (or aiomysql)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import databases
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ..awards import Award
from ..tables import awards
from .base import NewAward, Store, badge_filter, ordered

#: The name of the lock migrations take (GET_LOCK), and how long they wait for it, in seconds.
MIGRATION_LOCK = "abadges_migrations"
MIGRATION_LOCK_TIMEOUT = 600
# ER_NO_SUCH_TABLE, "Table 'db.abadges_awards' doesn't exist".
NO_SUCH_TABLE = 1146


class MySQLStore(Store):
    """Awards in MySQL or MariaDB: one insert per award, a duplicate made a no-op update."""

    dialect = "mysql"
    alembic_drivers: ClassVar[Mapping[str, str]] = {
        "mysql": "mysql+aiomysql",
        "mysql+aiomysql": "mysql+aiomysql",
        "mysql+asyncmy": "mysql+asyncmy",
    }
    migration_lock_timeout = MIGRATION_LOCK_TIMEOUT

    async def insert(self, new_awards: Sequence[NewAward]) -> list[Award]:
        if not new_awards:
            return []
        async with self.connection() as connection:
            try:
                return [
                    award
                    for values in map(_values, ordered(new_awards))
                    if (award := await self._insert(connection, values)) is not None
                ]
            except Exception as exc:
                if self.is_missing_table(exc):
                    raise self.schema_error() from exc
                raise

    async def _insert(
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
        return self.award({**values, "id": new_id})

    async def delete(self, user_id: str, slug: str, level: int | None) -> int:
        statement = awards.delete().where(awards.c.user_id == user_id, *badge_filter(slug, level))
        async with self.connection() as connection:
            with self.translating_errors():
                # The MySQL backends answer an execute() without an inserted id with rowcount.
                return int(await connection.execute(statement))

    def is_missing_table(self, exc: BaseException) -> bool:
        return bool(exc.args) and exc.args[0] == NO_SUCH_TABLE

    @contextlib.contextmanager
    def migration_lock(self, connection: sa.Connection) -> Iterator[None]:
        # DDL commits on MySQL: a lock of the session, not of the transaction.
        name = {"name": MIGRATION_LOCK}
        taken = connection.execute(
            sa.text("SELECT GET_LOCK(:name, :timeout)"),
            {**name, "timeout": self.migration_lock_timeout},
        ).scalar()
        if taken != 1:
            raise TimeoutError(
                f"Another process held the migration lock {MIGRATION_LOCK!r} of the database "
                f"{self.url.obscure_password!r} for {self.migration_lock_timeout} seconds; "
                "abadges' migrations did not run."
            )
        try:
            yield
        finally:
            connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), name)


def _values(award: NewAward) -> dict[str, Any]:
    values = dataclasses.asdict(award)
    # MySQL stores datetimes without a zone: store UTC, naive.
    values["awarded_at"] = award.awarded_at.astimezone(datetime.UTC).replace(tzinfo=None)
    return values
