"""The store for PostgreSQL, over asyncpg."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa

from ..awards import Award
from ..exceptions import AbadgesError, ConfigurationError
from ..tables import awards, history
from ._databases import asyncpg_pool
from .base import COLUMNS, NewAward, Store, ordered

#: The key of the advisory lock migrations take: "abadges" in ASCII.
MIGRATION_LOCK = 0x61626164676573
# asyncpg prepares the text once per connection; unnest() keeps it the same for any number of
# rows. One statement text, written once, instead of a SQLAlchemy insert compiled on every call
# (that compiling took half of an event's time).
# The history's "granted" rows are written by the same statement, from what the insert
# returns: one statement, one round trip, one transaction.
INSERT = (
    f"WITH new AS (INSERT INTO {awards.name} ({', '.join(COLUMNS)}) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::timestamptz[], $5::text[], "
    "$6::text[], $7::text[], $8::text[], $9::timestamptz[]) "
    "ON CONFLICT DO NOTHING RETURNING id, user_id, slug, level, award_key, awarded_at, source, "
    "granted_by, reason), "
    f"logged AS (INSERT INTO {history.name} "
    "(award_id, user_id, slug, level, action, at, source, actor, reason) "
    "SELECT id, user_id, slug, level, 'granted', awarded_at, source, granted_by, reason FROM new) "
    "SELECT id, user_id, slug, level, award_key FROM new"
)
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
