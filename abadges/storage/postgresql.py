"""The store for PostgreSQL, over asyncpg."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import databases
import sqlalchemy as sa

from ..exceptions import AbadgesError, ConfigurationError
from ..tables import awards, history
from ._databases import asyncpg_pool
from .base import COLUMNS, NewAward, Store, Written, ordered

#: The key of the advisory lock migrations take: "abadges" in ASCII.
MIGRATION_LOCK = 0x61626164676573
# asyncpg prepares the text once per connection; unnest() keeps it the same for any number of
# rows. One statement text, written once, instead of a SQLAlchemy insert compiled on every call
# (that compiling took half of an event's time).
# The history's "granted" rows are written by the same statement, from what the insert
# returns: one statement, one round trip, one transaction.
_ROWS = (
    "rows AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::timestamptz[], "
    "$5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::int4[]) "
    f"AS r({', '.join(COLUMNS)}))"
)
_NEW = (
    f"new AS (INSERT INTO {awards.name} ({', '.join(COLUMNS)}) SELECT * FROM rows {{where}}"
    "ON CONFLICT DO NOTHING RETURNING id, user_id, slug, level, award_key, awarded_at, source, "
    "granted_by, reason)"
)
_HISTORY = (
    f"INSERT INTO {history.name} (award_id, user_id, slug, level, action, at, source, actor, "
    "reason)"
)
_GRANTED = "SELECT id, user_id, slug, level, 'granted', awarded_at, source, granted_by, reason"
INSERT = (
    f"WITH {_ROWS}, {_NEW.format(where='')}, logged AS ({_HISTORY} {_GRANTED} FROM new) "
    "SELECT id, user_id, slug, level, award_key, 'granted' AS kind FROM new"
)
# For awards of badges that expire: the expired awards that hold their keys are deleted first,
# with their "expired" rows, so that the new ones are recorded. The statements of a WITH run
# in no set order, and an insert that ran before the delete would find the expired row and
# skip the award: the insert's WHERE reads the delete's count, which runs the delete to its
# end before the first row is inserted. The history rows are written by one insert, the
# "expired" ones first.
INSERT_REPLACING_EXPIRED = (
    f"WITH {_ROWS}, "
    f"expired AS (DELETE FROM {awards.name} a USING rows r WHERE a.user_id = r.user_id "
    "AND a.slug = r.slug AND a.level = r.level AND a.award_key = '' AND r.award_key = '' "
    "AND r.expires_at IS NOT NULL AND a.revoked_at IS NULL AND a.expires_at <= $11 "
    "RETURNING a.id, a.user_id, a.slug, a.level, a.award_key, a.awarded_at, a.source, "
    "a.granted_by, a.reason, a.expires_at), "
    f"{_NEW.format(where='WHERE (SELECT count(*) FROM expired) >= 0 ')}, "
    f"logged AS ({_HISTORY} SELECT award_id, user_id, slug, level, action, at, source, actor, "
    "reason FROM (SELECT 0 AS o, id AS award_id, user_id, slug, level, 'expired' AS action, "
    "expires_at AS at, source, NULL AS actor, NULL AS reason FROM expired "
    f"UNION ALL {_GRANTED.replace('SELECT ', 'SELECT 1, ')} FROM new) AS changes ORDER BY o) "
    "SELECT id, user_id, slug, level, award_key, 'granted' AS kind, "
    "NULL::timestamptz AS awarded_at, NULL AS source, NULL AS granted_by, NULL AS reason, "
    "NULL::timestamptz AS expires_at FROM new UNION ALL "
    "SELECT id, user_id, slug, level, award_key, 'expired', awarded_at, source, granted_by, "
    "reason, expires_at FROM expired"
)
#: The two-key space of the advisory locks that settlements take (see `lock()`): "abad".
SETTLE_LOCKS = 0x61626164
# The SQLSTATE of "relation does not exist".
UNDEFINED_TABLE = "42P01"
# ... and of "column does not exist".
UNDEFINED_COLUMN = "42703"
# The SQLSTATEs of "prepared statement ... does not exist" and "... already exists": what a
# pooler that hands each transaction a server connection of its own does to asyncpg's named
# statements, which live on the server connection that prepared them.
LOST_STATEMENT = frozenset({"26000", "42P05"})
#: The options a PostgreSQL URL's query string may hold: databases' pool sizes and TLS, and
#: asyncpg's statement cache (`?statement_cache_size=0` for PgBouncer in transaction mode).
URL_OPTIONS = ("min_size", "max_size", "ssl", "statement_cache_size")


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
        return {"reset": _keep_session, **self._driver_options()}

    def alembic_url(self) -> sa.URL:
        # The driver would get the query string's text "0", not a number: see connect args.
        return super().alembic_url().difference_update_query(["statement_cache_size"])

    def alembic_connect_args(self) -> dict[str, Any]:
        return self._driver_options()

    def _driver_options(self) -> dict[str, Any]:
        """asyncpg's options from the URL's query string, for the pool and for Alembic."""
        # databases reads only its own options from the query string and drops the rest
        # without a word: each option is either passed on here or refused.
        unknown = sorted(set(self.url.options) - set(URL_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"The database URL {self.url.obscure_password!r} has the option(s) {unknown}, "
                f"which abadges does not pass on; a PostgreSQL URL may have {list(URL_OPTIONS)}."
            )
        size = self.url.options.get("statement_cache_size")
        if size is None:
            return {}
        if not (size.isascii() and size.isdigit()):
            raise ConfigurationError(
                f"statement_cache_size in the database URL {self.url.obscure_password!r} must "
                f"be a whole number, 0 to turn asyncpg's prepared statements off; got {size!r}."
            )
        return {"statement_cache_size": int(size)}

    async def insert(self, new_awards: Sequence[NewAward]) -> Written:
        if not new_awards:
            return Written()
        awards_in_order = ordered(new_awards)
        arguments: list[Any] = [[getattr(a, name) for a in awards_in_order] for name in COLUMNS]
        statement = INSERT
        if any(award.expires_at is not None for award in awards_in_order):
            statement = INSERT_REPLACING_EXPIRED
            arguments.append(self.now())
        with self.translating_errors():
            # The pool is asyncpg's own, without databases' per-task connection bookkeeping
            # around it: the insert is the whole unit of work.
            async with asyncpg_pool(self.database).acquire() as raw:
                records = await raw.fetch(statement, *arguments)
        granted = [record for record in records if record["kind"] == "granted"]
        return Written(
            self.returned(awards_in_order, granted),
            [("expired", self.award(record)) for record in records if record["kind"] != "granted"],
        )

    async def insert_row(
        self, connection: databases.core.Connection, values: dict[str, Any]
    ) -> int:
        return int(await connection.execute(awards.insert().values(values).returning(awards.c.id)))

    async def lock(self, connection: databases.core.Connection, user_id: str, slug: str) -> None:
        # Released when the transaction ends. The two-key form has a space of its own, apart
        # from the migrations' one-key lock; two pairs that hash alike only take turns.
        key = f"{len(user_id)}:{user_id}{slug}"
        lock = sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))")
        await connection.execute(lock.bindparams(space=SETTLE_LOCKS, key=key))

    def is_missing_table(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == UNDEFINED_TABLE

    def is_missing_column(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == UNDEFINED_COLUMN

    def translated(self, exc: BaseException) -> AbadgesError | None:
        # SQLAlchemy (the migrations) wraps the driver's error: its `orig` has the SQLSTATE.
        if {_sqlstate(exc), _sqlstate(getattr(exc, "orig", None))} & LOST_STATEMENT:
            return ConfigurationError(
                f"The database {self.url.obscure_password!r} lost a prepared statement between "
                f"two queries ({type(exc).__name__}): a pooler such as PgBouncer in transaction "
                "or statement mode stands between abadges and PostgreSQL. Add "
                "?statement_cache_size=0 to the database URL, or use the pooler's session mode."
            )
        return super().translated(exc)

    @contextlib.contextmanager
    def migration_lock(self, connection: sa.Connection) -> Iterator[None]:
        # Released when the migrations' transaction ends, committed or not.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        yield


def _sqlstate(exc: object) -> str | None:
    return getattr(exc, "sqlstate", None)


async def _keep_session(connection: object) -> None:
    """The pool's reset: nothing beyond asyncpg's rollback of an open transaction."""
