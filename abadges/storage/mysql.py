"""The store for MySQL and MariaDB, over asyncmy (or aiomysql)."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

import anyio
import databases
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ..awards import Award
from ..tables import awards, history
from .base import KEYS_PER_QUERY, NewAward, Settlement, Store, Written, ordered, text

#: The name of the lock migrations take (GET_LOCK), and how long they wait for it, in seconds.
MIGRATION_LOCK = "abadges_migrations"
MIGRATION_LOCK_TIMEOUT = 600
# ER_NO_SUCH_TABLE, "Table 'db.abadges_awards' doesn't exist".
NO_SUCH_TABLE = 1146
# ER_BAD_FIELD_ERROR, "Unknown column 'revoked_at' in 'field list'".
BAD_FIELD = 1054
# ER_LOCK_DEADLOCK, "Deadlock found when trying to get lock; try restarting transaction".
LOCK_DEADLOCK = 1213
#: How long a settlement waits for the lock of a user's levels of a badge, in seconds: as long
#: as InnoDB's default lock wait.
SETTLE_LOCK_TIMEOUT = 50


class MySQLStore(Store):
    """Awards in MySQL or MariaDB: one read of the keys held, then one insert per award not
    held, a duplicate made a no-op update, the inserts of one event (or group commit) in one
    transaction; deadlocks retried."""

    dialect = "mysql"
    alembic_drivers: ClassVar[Mapping[str, str]] = {
        "mysql": "mysql+aiomysql",
        "mysql+aiomysql": "mysql+aiomysql",
        "mysql+asyncmy": "mysql+asyncmy",
    }
    migration_lock_timeout = MIGRATION_LOCK_TIMEOUT

    async def insert(self, new_awards: Sequence[NewAward]) -> Written:
        if not new_awards:
            return Written()
        awards_in_order = ordered(new_awards)
        async with self.connection() as connection:
            with self.translating_errors():
                return await self.retrying_deadlocks(
                    lambda: self._insert_all(connection, awards_in_order)
                )

    async def _insert_all(
        self, connection: databases.core.Connection, awards_in_order: Sequence[NewAward]
    ) -> Written:
        # One transaction, so that an error on a later one (a deadlock, say) leaves none
        # committed (none recorded, none unannounced), and the history rows with them.
        async with connection.transaction():
            written = await self._inserting(
                connection, awards_in_order, lambda chunk: self._insert(connection, chunk)
            )
            rows = [self.expired_row(award) for _, award in written.ended]
            rows += self.granted(written.recorded)
            if rows:
                await connection.execute(history.insert().values(rows))
        return written

    async def _insert(
        self, connection: databases.core.Connection, new_awards: Sequence[NewAward]
    ) -> list[Award]:
        # Most awards given are held already (a badge gives its level again at every event),
        # and each insert is a round trip of its own: one read of the keys held saves one for
        # each of them. An award inserted by another transaction since still meets the
        # unique key; one it deleted since is as if it had been deleted after this insert.
        # A lone award gains nothing from it: its insert finds out as fast as the read would.
        held = await self._held_keys(connection, new_awards) if len(new_awards) > 1 else set()
        recorded = []
        for award in new_awards:
            if (award.user_id, award.slug, award.level, award.award_key) in held:
                continue
            values = self.row_values(award)
            # A duplicate key turns the insert into a no-op update that returns 0. INSERT
            # IGNORE would do the same, but it also turns truncation into a warning, and the
            # drivers follow each warning with a SHOW WARNINGS round trip and a log line. The
            # 0 relies on the connection not setting the FOUND_ROWS client flag, which asyncmy
            # does not set.
            statement = mysql.insert(awards).values(values)
            new_id = await connection.execute(statement.on_duplicate_key_update(id=awards.c.id))
            if new_id:
                recorded.append(self.recorded(award, new_id))
        return recorded

    async def _held_keys(
        self, connection: databases.core.Connection, new_awards: Sequence[NewAward]
    ) -> set[tuple[str, str, int, str]]:
        """The keys of `new_awards` that the awards table holds (revoked and expired rows
        included: they hold their keys too)."""
        columns = (awards.c.user_id, awards.c.slug, awards.c.level, awards.c.award_key)
        keys = [(a.user_id, a.slug, a.level, a.award_key) for a in new_awards]
        held: set[tuple[str, str, int, str]] = set()
        for start in range(0, len(keys), KEYS_PER_QUERY):
            query = sa.select(*columns).where(
                sa.tuple_(*columns).in_(keys[start : start + KEYS_PER_QUERY])
            )
            rows = await connection.fetch_all(query)
            held.update((text(r[0]), text(r[1]), int(r[2]), text(r[3])) for r in rows)
        return held

    async def settle(self, settlement: Settlement) -> Written:
        # GET_LOCK's lock belongs to the session, not to the transaction: taken around it,
        # and released once it has ended, committed or not.
        name = self.settle_lock_name(settlement.user_id, settlement.slug)
        async with self.connection() as connection:
            with self.translating_errors():
                get_lock = sa.text("SELECT GET_LOCK(:name, :timeout)")
                taken = await connection.fetch_val(
                    get_lock.bindparams(name=name, timeout=SETTLE_LOCK_TIMEOUT)
                )
                if taken != 1:
                    raise TimeoutError(
                        f"Another connection held the lock of the levels user "
                        f"{settlement.user_id!r} holds of badge {settlement.slug!r} for "
                        f"{SETTLE_LOCK_TIMEOUT} seconds."
                    )
                try:
                    return await self.retrying_deadlocks(
                        lambda: self._settle(connection, settlement)
                    )
                finally:
                    with anyio.CancelScope(shield=True):
                        release = sa.text("SELECT RELEASE_LOCK(:name)").bindparams(name=name)
                        await connection.execute(release)

    async def lock(self, connection: databases.core.Connection, user_id: str, slug: str) -> None:
        """Nothing more: `settle()` holds the lock around the transaction."""

    def settle_lock_name(self, user_id: str, slug: str) -> str:
        """The GET_LOCK name of the user's levels of a badge: at most 64 characters."""
        key = f"{len(user_id)}:{user_id}{slug}".encode("utf-8", "surrogatepass")
        return f"abadges:{hashlib.sha1(key).hexdigest()}"

    def now(self) -> datetime.datetime:
        return _naive_utc(datetime.datetime.now(datetime.UTC))

    def stored(self, at: datetime.datetime) -> datetime.datetime:
        return _naive_utc(at)

    def is_missing_table(self, exc: BaseException) -> bool:
        return bool(exc.args) and exc.args[0] == NO_SUCH_TABLE

    def is_deadlock(self, exc: BaseException) -> bool:
        return bool(exc.args) and exc.args[0] == LOCK_DEADLOCK

    def is_missing_column(self, exc: BaseException) -> bool:
        return bool(exc.args) and exc.args[0] == BAD_FIELD

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


def _naive_utc(at: datetime.datetime) -> datetime.datetime:
    # MySQL stores datetimes without a zone: store UTC, naive.
    return at.astimezone(datetime.UTC).replace(tzinfo=None)
