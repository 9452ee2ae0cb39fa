"""The store interface, the queries every database shares, and the records they return."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import anyio
import databases
import sqlalchemy as sa
from databases.interfaces import Record

from ..awards import Action, Award, AwardChange, Source
from ..base import BadgeDetail
from ..exceptions import AbadgesError, ConfigurationError, SchemaError
from ..tables import awards, backfills, history
from ._databases import new_connection
from ._migrations import current as current_revision
from ._migrations import head as head_revision
from ._migrations import run as run_migrations

UTC = datetime.UTC
logger = logging.getLogger("abadges")
Result = TypeVar("Result")
#: How many times a write runs when the database picks it as a deadlock's victim, and the
#: most seconds it waits before the next time: doubled after each try, up to the cap.
DEADLOCK_ATTEMPTS = 20
DEADLOCK_BACKOFF = 0.005
DEADLOCK_BACKOFF_CAP = 0.5


@dataclasses.dataclass(frozen=True)
class NewAward:
    """An award about to be recorded."""

    user_id: str
    slug: str
    level: int
    awarded_at: datetime.datetime
    award_key: str = ""
    source: Source = "event"
    granted_by: str | None = None
    reason: str | None = None
    expires_at: datetime.datetime | None = None
    #: The level's `BadgeDetail.points`, which the totals add up.
    points: int = 1


@dataclasses.dataclass
class Written:
    """What a write did: the awards it recorded, and those that stopped being held, each with
    the history's action ("expired", "revoked", "replaced")."""

    recorded: list[Award] = dataclasses.field(default_factory=list)
    ended: list[tuple[Action, Award]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Settlement:
    """What one evaluation (or grant) of a `temporary` or `replaces_lower` badge does to one
    user's levels of it, which depends on the levels they hold.

    `new` is the award to record unless held, or None (a temporary badge's `award()` gave
    nothing); with `revoke_above`, the levels held above it are revoked; with `replace_lower`,
    the user keeps only the highest level held or new, the others "replaced". `at` is when the
    change happens; levels expired by then are moved to the history as "expired"."""

    user_id: str
    slug: str
    new: NewAward | None
    at: datetime.datetime
    revoke_above: bool = False
    replace_lower: bool = False
    #: Made by a backfill: its revocations say so in the history.
    backfill: bool = False

    @property
    def level(self) -> int:
        """The level given: 0 for none."""
        return 0 if self.new is None else self.new.level

    def plan(self, rows: Sequence[Award]) -> tuple[list[tuple[Action, Award]], bool, int]:
        """What this settlement does to `rows`, the user's awards of the badge not revoked:
        the awards it ends, each with the history's action; whether `new` is recorded; and
        the top level, which `replace_lower` keeps."""
        ended: list[tuple[Action, Award]] = []
        held: list[Award] = []
        for award in rows:
            if award.expires_at is not None and award.expires_at <= self.at:
                ended.append(("expired", award))
            elif self.revoke_above and award.level > self.level:
                ended.append(("revoked", award))
            else:
                held.append(award)
        levels = {award.level for award in held}
        top = max(levels | {self.level})
        if self.replace_lower:
            ended += [("replaced", award) for award in held if award.level < top]
        # A level held already is kept; with replace_lower, a level below one held is not
        # recorded.
        records = (
            self.new is not None
            and self.new.level not in levels
            and (self.new.level == top or not self.replace_lower)
        )
        return ended, records, top


@dataclasses.dataclass(frozen=True)
class StoredAward:
    """A row of the awards table: its award, its award key, and whether it is revoked."""

    award: Award
    award_key: str
    revoked: bool

    def expired(self, now: datetime.datetime) -> bool:
        return self.award.expires_at is not None and self.award.expires_at <= now


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Where a backfill run stands: `position` users from the start are written, the last of
    them `last_user_id`; `options` are the run's badges and options, as text."""

    name: str
    options: str
    position: int
    last_user_id: str | None


@dataclasses.dataclass(frozen=True)
class MigrationStatus:
    """Where the database's abadges schema stands: `current` is the revision it is at (None
    before the first `migrate()`, also for a table made by abadges 0.1's `create_tables()`),
    `head` the revision this version of abadges upgrades to."""

    current: str | None
    head: str

    @property
    def is_current(self) -> bool:
        """True when the database is at `head`: `migrate()` has nothing to do."""
        return self.current == self.head


Describe = Callable[[str, int], BadgeDetail | None]


class Store(abc.ABC):
    """Records and queries awards in one database; `describe` names the levels.

    One subclass per database, chosen from the URL by `abadges.storage.open_store()`.
    """

    #: The database, as `databases.DatabaseURL.dialect` names it.
    dialect: ClassVar[str]
    #: The SQLAlchemy async driver Alembic uses, by the scheme of the `databases` URL.
    alembic_drivers: ClassVar[Mapping[str, str]]

    def __init__(self, url: databases.DatabaseURL, describe: Describe) -> None:
        self.url = url
        try:
            self.database = databases.Database(url, **self.database_options())
        except ImportError as exc:
            raise ConfigurationError(
                f"The database URL {url.obscure_password!r} needs the driver {exc.name!r}, "
                f"which is not installed: pip install 'abadges[{self.dialect}]'."
            ) from exc
        self._describe = describe

    def database_options(self) -> dict[str, Any]:
        """Keyword arguments for `databases.Database`, passed on to the driver's pool."""
        return {}

    async def connect(self) -> None:
        await self.database.connect()

    async def disconnect(self) -> None:
        await self.database.disconnect()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[databases.core.Connection]:
        """A connection for one unit of work."""
        # A Connection of its own, not the task's (database.connection()): when a release
        # fails, on a connection the server ended, databases keeps the Connection marked
        # acquired, and every later query through it fails with "Connection is already
        # acquired" (encode/databases#416). The task's own would carry that to its next call.
        async with new_connection(self.database) as connection:
            yield connection

    # Schema ---------------------------------------------------------------------------------------

    async def migrate(self, revision: str = "head") -> None:
        """Run abadges' Alembic migrations up to `revision`, holding the migration lock."""
        with self.translating_errors():
            await run_migrations(
                self.alembic_url(), self.alembic_connect_args(), self.migration_lock, revision
            )

    async def migration_status(self) -> MigrationStatus:
        """The revision the database is at, and the one `migrate()` would bring it to."""
        with self.translating_errors():
            current = await current_revision(self.alembic_url(), self.alembic_connect_args())
        return MigrationStatus(current=current, head=head_revision())

    @contextlib.contextmanager
    def migration_lock(self, connection: sa.Connection) -> Iterator[None]:
        """Held while migrations run on `connection`, so that concurrent runs take turns.

        Entered inside the transaction the migrations run in."""
        yield

    def alembic_url(self) -> sa.URL:
        url = sa.make_url(str(self.url))
        # databases reads its pool's sizes from the query string; the drivers would refuse them.
        query = {k: v for k, v in url.query.items() if k not in _POOL_OPTIONS}
        scheme = self.url.scheme
        return url.set(drivername=self.alembic_drivers[scheme], query=query)

    def alembic_connect_args(self) -> dict[str, Any]:
        """Keyword arguments for the driver's `connect()` when Alembic connects, beside those
        of `alembic_url()`, whose query string can only carry text."""
        return {}

    @abc.abstractmethod
    def is_missing_table(self, exc: BaseException) -> bool:
        """Does the driver's `exc` say that the awards table does not exist?"""

    @abc.abstractmethod
    def is_missing_column(self, exc: BaseException) -> bool:
        """Does the driver's `exc` say that a column does not exist?"""

    def is_deadlock(self, exc: BaseException) -> bool:
        """Does the driver's `exc` say that the database rolled the transaction back as a
        deadlock's victim? Never on SQLite, whose one writer waits for the lock."""
        return False

    async def retrying_deadlocks(self, attempt: Callable[[], Awaitable[Result]]) -> Result:
        """`attempt()`, a write's whole transaction, run again when the database chose it as
        a deadlock's victim.

        The database rolls a victim's transaction back whole, so running it again is safe:
        nothing of it was committed, nor announced. Writes that lock rows of several users in
        more than one statement (an expiry, a backfill's revocations) can meet another in the
        totals that the triggers keep, as MySQL's inserts meet in their gap locks. After
        `DEADLOCK_ATTEMPTS` the deadlock error is raised; it is transient (`is_transient()`),
        so the worker retries the job later."""
        for tries in itertools.count(1):
            try:
                return await attempt()
            except Exception as exc:
                if not self.is_deadlock(exc) or tries == DEADLOCK_ATTEMPTS:
                    raise
                logger.debug("Deadlock (try %d of %d), again: %s", tries, DEADLOCK_ATTEMPTS, exc)
                # Apart, so that the transactions that deadlocked do not meet again at once.
                await anyio.sleep(
                    random.uniform(0, min(DEADLOCK_BACKOFF * 2**tries, DEADLOCK_BACKOFF_CAP))
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def schema_error(self) -> SchemaError:
        return SchemaError(
            f"The table {awards.name!r} does not exist in the database "
            f"{self.url.obscure_password!r}: run `await badges.migrate()` or "
            "`abadges db upgrade` to create it."
        )

    def outdated_schema_error(self, column: str) -> SchemaError:
        return SchemaError(
            f"The table {awards.name!r} of the database {self.url.obscure_password!r} is older "
            f"than this version of abadges: it has no column {column!r}. Run "
            "`await badges.migrate()` or `abadges db upgrade` before this version starts."
        )

    def translated(self, exc: BaseException) -> AbadgesError | None:
        """abadges' error for the driver's `exc`, one that says what to change; None when
        `exc` goes up as it is."""
        if self.is_missing_table(exc):
            return self.schema_error()
        if self.is_missing_column(exc):
            for column in ADDED_COLUMNS:
                if column in str(exc):
                    return self.outdated_schema_error(column)
        return None

    @contextlib.contextmanager
    def translating_errors(self) -> Iterator[None]:
        """Raise the driver's errors that abadges can explain as `translated()` gives them:
        "no such table", and "no such column" for a column that a later revision added, as a
        `SchemaError` that says what to run, and the like."""
        try:
            yield
        except Exception as exc:
            error = self.translated(exc)
            if error is not None:
                raise error from exc
            raise

    # Awards ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def insert(self, new_awards: Sequence[NewAward]) -> Written:
        """Record `new_awards`, skipping those the unique constraint already holds, each award
        with its history row in the same transaction.

        An award of a badge that expires, whose key an expired award holds, replaces it: the
        expired award is moved to the history ("expired", in `ended`) in the same transaction,
        so that it can be earned again at once."""

    async def _inserting(
        self,
        connection: databases.core.Connection,
        awards_in_order: Sequence[NewAward],
        insert: Callable[[Sequence[NewAward]], Awaitable[list[Award]]],
    ) -> Written:
        """Inside an insert's transaction: `insert(awards_in_order)`, the conflict-ignoring
        insert of a store that has no single statement for it (SQLite, MySQL); then, for the
        awards it skipped whose key an expired award holds, delete that award and `insert()`
        them again. The deleted awards are in `ended`, for their "expired" rows."""
        written = Written(await insert(awards_in_order))
        missing = _skipped(awards_in_order, written.recorded)
        expired = await self._replace_expired(connection, missing) if missing else []
        if expired:
            written.recorded += await insert(_replaced(missing, expired))
            written.ended = [("expired", award) for award in expired]
        return written

    async def _replace_expired(
        self, connection: databases.core.Connection, skipped: Sequence[NewAward]
    ) -> list[Award]:
        """Delete the expired awards that hold the keys of `skipped` (what `_skipped()` gives),
        and return them."""
        keys = [(a.user_id, a.slug, a.level) for a in skipped]
        expired: list[Award] = []
        for start in range(0, len(keys), KEYS_PER_QUERY):
            where = (
                sa.tuple_(awards.c.user_id, awards.c.slug, awards.c.level).in_(
                    keys[start : start + KEYS_PER_QUERY]
                ),
                awards.c.award_key == "",
                awards.c.revoked_at.is_(None),
                awards.c.expires_at <= self.now(),
            )
            query = awards.select().where(*where).order_by(awards.c.id).with_for_update()
            rows = await connection.fetch_all(query)
            if rows:
                ids = [int(row["id"]) for row in rows]
                await connection.execute(awards.delete().where(awards.c.id.in_(ids)))
                expired += [self.award(row) for row in rows]
        return expired

    async def settle(self, settlement: Settlement) -> Written:
        """Apply `settlement` (see `Settlement`) in one transaction, holding a lock on the
        user's levels of the badge, so that concurrent settlements of the same levels take
        turns: each sees what the one before it committed."""
        async with self.connection() as connection:
            with self.translating_errors():
                return await self.retrying_deadlocks(lambda: self._settle(connection, settlement))

    async def _settle(
        self, connection: databases.core.Connection, settlement: Settlement
    ) -> Written:
        user_id, slug, new = settlement.user_id, settlement.slug, settlement.new
        async with self.transaction(connection):
            await self.lock(connection, user_id, slug)
            query = awards.select().where(
                awards.c.user_id == user_id, awards.c.slug == slug, awards.c.revoked_at.is_(None)
            )
            rows = await connection.fetch_all(query.order_by(awards.c.id).with_for_update())
            ended, records, top = settlement.plan([self.award(row) for row in rows])
            written = Written(ended=ended)
            if new is not None and records:
                new_id = await self.insert_row(connection, self.row_values(new))
                written.recorded.append(self.recorded(new, new_id))
            if written.ended:
                ids = [award.id for _, award in written.ended]
                await connection.execute(awards.delete().where(awards.c.id.in_(ids)))
            history_rows = [self.ended_row(a, award, settlement, top) for a, award in written.ended]
            history_rows += self.granted(written.recorded)
            if history_rows:
                await connection.execute_many(history.insert(), history_rows)
        return written

    def ended_row(
        self, action: Action, award: Award, settlement: Settlement, top: int
    ) -> dict[str, Any]:
        """The history row of `award`, which `settlement` ended by `action`, keeping level `top`:
        an expired award's is dated its `expires_at`, the others' say why."""
        if action == "expired":
            return self.expired_row(award)
        if action == "replaced":
            reason = f"Replaced by level {top}."
        elif settlement.backfill:
            reason = backfill_reason(settlement.level)
        else:
            gives = f"level {settlement.level}" if settlement.level else "no level"
            reason = f"Temporary badge: award() now gives {gives}."
        return Change(self.stored(settlement.at), None, reason).row(award, action)

    def expired_row(self, award: Award) -> dict[str, Any]:
        """The "expired" history row of `award`, dated its `expires_at`."""
        assert award.expires_at is not None
        return Change(self.stored(award.expires_at)).row(award, "expired")

    @abc.abstractmethod
    async def lock(self, connection: databases.core.Connection, user_id: str, slug: str) -> None:
        """Inside a settlement's transaction: lock the user's levels of the badge until it
        ends."""

    def row_values(self, award: NewAward) -> dict[str, Any]:
        """The awards table's values of `award`, its dates as this database takes them."""
        values = dataclasses.asdict(award)
        values["awarded_at"] = self.stored(award.awarded_at)
        if award.expires_at is not None:
            values["expires_at"] = self.stored(award.expires_at)
        return values

    async def insert_row(
        self, connection: databases.core.Connection, values: dict[str, Any]
    ) -> int:
        """Insert one award's row; return its id."""
        return int(await connection.execute(awards.insert().values(values)))

    async def expire(self, limit: int) -> list[Award]:
        """Move up to `limit` expired awards to the history as "expired", the oldest first, and
        return them: a badge held once loses its row, so that it can be earned again; a
        `multiple` badge's award keeps it, marked revoked, so that its key stays taken.

        Rows another process is moving at the same moment are skipped (FOR UPDATE SKIP
        LOCKED): many workers running it at once each move different awards, none twice."""
        async with self.connection() as connection:
            with self.translating_errors():
                return await self.retrying_deadlocks(lambda: self._expire(connection, limit))

    async def _expire(self, connection: databases.core.Connection, limit: int) -> list[Award]:
        where = (awards.c.revoked_at.is_(None), awards.c.expires_at <= self.now())
        async with self.transaction(connection):
            query = awards.select().where(*where).order_by(awards.c.expires_at, awards.c.id)
            rows = await connection.fetch_all(query.limit(limit).with_for_update(skip_locked=True))
            if not rows:
                return []
            expired = [self.award(row) for row in rows]
            kept = [row["id"] for row in rows if text(row["award_key"]) != ""]
            gone = [row["id"] for row in rows if text(row["award_key"]) == ""]
            if gone:
                await connection.execute(awards.delete().where(awards.c.id.in_(gone)))
            if kept:
                await connection.execute(
                    awards.update()
                    .where(awards.c.id.in_(kept))
                    .values(revoked_at=awards.c.expires_at)
                )
            await connection.execute_many(history.insert(), list(map(self.expired_row, expired)))
        return expired

    def now(self) -> datetime.datetime:
        """The time to compare `expires_at` with, as this database's columns hold it."""
        return datetime.datetime.now(UTC)

    def held(self) -> sa.ColumnElement[bool]:
        """The awards held now: neither revoked nor expired."""
        return held(self.now())

    async def awards_for(self, user_id: str) -> list[Award]:
        query = awards.select().where(awards.c.user_id == user_id, self.held())
        return await self._fetch_awards(query.order_by(*_newest_first()))

    async def count_for(self, user_id: str) -> int:
        query = sa.select(sa.func.count()).where(awards.c.user_id == user_id, self.held())
        async with self.connection() as connection:
            with self.translating_errors():
                return int(await connection.fetch_val(query))

    async def holds(self, user_id: str, slug: str, level: int | None) -> bool:
        query = sa.select(awards.c.id).where(
            awards.c.user_id == user_id, *badge_filter(slug, level), self.held()
        )
        async with self.connection() as connection:
            with self.translating_errors():
                return await connection.fetch_one(query.limit(1)) is not None

    async def holders(self, slug: str, level: int | None, limit: int, offset: int) -> list[Award]:
        query = awards.select().where(*badge_filter(slug, level), self.held())
        return await self._fetch_awards(
            query.order_by(*_newest_first()).limit(limit).offset(offset)
        )

    async def counts(self) -> dict[tuple[str, int], int]:
        """How many awards each (slug, level) has, for those with at least one."""
        query = (
            sa.select(awards.c.slug, awards.c.level, sa.func.count())
            .where(self.held())
            .group_by(awards.c.slug, awards.c.level)
        )
        async with self.connection() as connection:
            with self.translating_errors():
                rows = await connection.fetch_all(query)
        return {(text(row[0]), int(row[1])): int(row[2]) for row in rows}

    # The unseen list ---------------------------------------------------------------------------

    async def unseen(self, user_id: str) -> list[Award]:
        """The user's awards held and not marked seen, newest first."""
        query = awards.select().where(
            awards.c.user_id == user_id, awards.c.seen_at.is_(None), self.held()
        )
        return await self._fetch_awards(query.order_by(*_newest_first()))

    async def mark_seen(
        self, user_id: str, ids: Sequence[int] | None, at: datetime.datetime
    ) -> int:
        """Mark the user's unseen awards held (those of `ids` only, when given; the ids of
        other users' awards are passed over) seen at `at`, in one transaction; return how
        many."""
        where = (awards.c.user_id == user_id, awards.c.seen_at.is_(None), self.held())
        chunks: list[Sequence[int] | None] = [None]
        if ids is not None:
            unique = sorted(set(ids))
            chunks = [unique[i : i + KEYS_PER_QUERY] for i in range(0, len(unique), KEYS_PER_QUERY)]
        marked = 0
        async with self.connection() as connection:
            with self.translating_errors():
                async with self.transaction(connection):
                    for chunk in chunks:
                        query = sa.select(awards.c.id).where(*where).with_for_update()
                        if chunk is not None:
                            query = query.where(awards.c.id.in_(chunk))
                        # Read, then update by id: rowcounts differ by driver (PITFALLS.md).
                        found = [int(row[0]) for row in await connection.fetch_all(query)]
                        if found:
                            await connection.execute(
                                awards.update()
                                .where(awards.c.id.in_(found))
                                .values(seen_at=self.stored(at))
                            )
                        marked += len(found)
        return marked

    async def revoke(
        self, user_id: str, slug: str, level: int | None, change: Change, keep_keys: bool
    ) -> list[Award]:
        """End the user's held awards of a badge (of one level, if given), each with its
        history row written in the same transaction; return them.

        With `keep_keys` (a `multiple` badge's awards) the rows stay, marked revoked at
        `change.at`, so that their award keys stay taken; otherwise they are deleted."""
        async with self.connection() as connection:
            with self.translating_errors():
                return await self.retrying_deadlocks(
                    lambda: self._revoke(connection, user_id, slug, level, change, keep_keys)
                )

    async def _revoke(
        self,
        connection: databases.core.Connection,
        user_id: str,
        slug: str,
        level: int | None,
        change: Change,
        keep_keys: bool,
    ) -> list[Award]:
        where = (awards.c.user_id == user_id, *badge_filter(slug, level), self.held())
        async with self.transaction(connection):
            # Locked (PostgreSQL, MySQL) or in the one writer's transaction (SQLite): a
            # concurrent revoke of the same awards waits, then finds them gone.
            query = awards.select().where(*where).order_by(awards.c.id)
            rows = await connection.fetch_all(query.with_for_update())
            if not rows:
                return []
            ended = [self.award(row) for row in rows]
            ids = [award.id for award in ended]
            statement: sa.Update | sa.Delete = awards.delete()
            if keep_keys:
                statement = awards.update().values(revoked_at=self.stored(change.at))
            await connection.execute(statement.where(awards.c.id.in_(ids)))
            stored = dataclasses.replace(change, at=self.stored(change.at))
            await connection.execute_many(
                history.insert(), [stored.row(award, "revoked") for award in ended]
            )
        return ended

    # Credentials ----------------------------------------------------------------------------------

    async def award_state(self, award_id: int) -> Award | Action | None:
        """The award of id `award_id` when it is held; else how it stopped being held (the last
        action of its history: "revoked", "expired", "replaced"), or None when no award had
        that id."""
        async with self.connection() as connection:
            with self.translating_errors():
                row = await connection.fetch_one(awards.select().where(awards.c.id == award_id))
                if row is not None and row["revoked_at"] is None:
                    award = self.award(row)
                    if award.expires_at is None or award.expires_at > datetime.datetime.now(UTC):
                        return award
                query = (
                    sa.select(history.c.action)
                    .where(history.c.award_id == award_id, history.c.action != "granted")
                    .order_by(history.c.id.desc())
                    .limit(1)
                )
                ended = await connection.fetch_one(query)
        if ended is not None:
            action: Action = ended[0]
            return action
        # Expired, and not moved to the history yet.
        return None if row is None else "expired"

    async def revoked_award_ids(self) -> list[int]:
        """The ids of the awards revoked, or replaced by a higher level: the status list's."""
        query = (
            sa.select(history.c.award_id)
            .where(history.c.action.in_(("revoked", "replaced")))
            .distinct()
        )
        async with self.connection() as connection:
            with self.translating_errors():
                return [int(row[0]) for row in await connection.fetch_all(query)]

    # Backfills ------------------------------------------------------------------------------------

    async def awards_of(self, pairs: Sequence[tuple[str, str]]) -> list[StoredAward]:
        """Every award row of each (user_id, slug) of `pairs`, revoked and expired ones
        included: what a dry run of a backfill plans on."""
        found: list[StoredAward] = []
        async with self.connection() as connection:
            with self.translating_errors():
                for start in range(0, len(pairs), KEYS_PER_QUERY):
                    chunk = pairs[start : start + KEYS_PER_QUERY]
                    query = awards.select().where(
                        sa.tuple_(awards.c.user_id, awards.c.slug).in_(chunk)
                    )
                    found += [
                        StoredAward(
                            self.award(row), text(row["award_key"]), row["revoked_at"] is not None
                        )
                        for row in await connection.fetch_all(query.order_by(awards.c.id))
                    ]
        return found

    async def revoke_above(
        self, targets: Sequence[tuple[str, str, int]], at: datetime.datetime
    ) -> list[Award]:
        """For each (user_id, slug, level) of `targets`, end the user's held awards of that
        badge above `level` (0: all), a badge held once, as "revoked" by a backfill, with their
        history rows, all in one transaction; return them."""
        async with self.connection() as connection:
            with self.translating_errors():
                return await self.retrying_deadlocks(
                    lambda: self._revoke_above(connection, targets, at)
                )

    async def _revoke_above(
        self,
        connection: databases.core.Connection,
        targets: Sequence[tuple[str, str, int]],
        at: datetime.datetime,
    ) -> list[Award]:
        kept = {(user_id, slug): level for user_id, slug, level in targets}
        pairs = list(kept)
        ended: list[Award] = []
        async with self.transaction(connection):
            for start in range(0, len(pairs), KEYS_PER_QUERY):
                where = (
                    sa.tuple_(awards.c.user_id, awards.c.slug).in_(
                        pairs[start : start + KEYS_PER_QUERY]
                    ),
                    self.held(),
                )
                query = awards.select().where(*where).order_by(awards.c.id).with_for_update()
                for award in map(self.award, await connection.fetch_all(query)):
                    if award.level > kept[award.user_id, award.slug]:
                        ended.append(award)
            if ended:
                ids = [award.id for award in ended]
                await connection.execute(awards.delete().where(awards.c.id.in_(ids)))
                rows = [
                    Change(self.stored(at), None, backfill_reason(kept[a.user_id, a.slug])).row(
                        a, "revoked"
                    )
                    for a in ended
                ]
                await connection.execute_many(history.insert(), rows)
        return ended

    async def checkpoint(self, name: str) -> Checkpoint | None:
        """The checkpoint of the backfill named `name`, if one is saved."""
        query = backfills.select().where(backfills.c.name == name)
        async with self.connection() as connection:
            with self.translating_errors():
                row = await connection.fetch_one(query)
        if row is None:
            return None
        last = row["last_user_id"]
        return Checkpoint(name, row["options"], int(row["position"]), optional_text(last))

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Save `checkpoint`, in place of the one of the same name."""
        values = dataclasses.asdict(checkpoint) | {"updated_at": self.stored(self.now())}
        async with self.connection() as connection:
            with self.translating_errors():
                async with self.transaction(connection):
                    await connection.execute(
                        backfills.delete().where(backfills.c.name == checkpoint.name)
                    )
                    await connection.execute(backfills.insert().values(values))

    async def delete_checkpoint(self, name: str) -> None:
        """Delete the checkpoint named `name`: its run has ended."""
        async with self.connection() as connection:
            with self.translating_errors():
                await connection.execute(backfills.delete().where(backfills.c.name == name))

    def transaction(
        self, connection: databases.core.Connection
    ) -> contextlib.AbstractAsyncContextManager[object]:
        """A transaction that writes, on `connection`."""
        return connection.transaction()

    def stored(self, at: datetime.datetime) -> datetime.datetime:
        """`at` as this database's datetime columns take it."""
        return at.astimezone(UTC)

    async def history(
        self, user_id: str | None, slug: str | None, limit: int, offset: int
    ) -> list[AwardChange]:
        """The changes of what users hold, newest first: of one user, or one badge, if given."""
        query = history.select()
        if user_id is not None:
            query = query.where(history.c.user_id == user_id)
        if slug is not None:
            query = query.where(history.c.slug == slug)
        # In the order the changes were written: `at` can be earlier than a later change's (a
        # grant with force_timestamp, a deferred award dated by its event).
        query = query.order_by(history.c.id.desc())
        async with self.connection() as connection:
            with self.translating_errors():
                rows = await connection.fetch_all(query.limit(limit).offset(offset))
        return [self.change(row) for row in rows]

    async def _fetch_awards(self, query: sa.Select[Any]) -> list[Award]:
        async with self.connection() as connection:
            with self.translating_errors():
                return [self.award(record) for record in await connection.fetch_all(query)]

    def award(self, record: Record | Mapping[str, Any]) -> Award:
        """The `Award` of a row of the awards table."""
        slug = text(record["slug"])
        level = int(record["level"])
        detail = self._describe(slug, level)
        awarded_at = utc(record["awarded_at"])
        assert awarded_at is not None
        return Award(
            id=int(record["id"]),
            user_id=text(record["user_id"]),
            slug=slug,
            level=level,
            name=detail.name if detail else None,
            description=detail.description if detail else None,
            awarded_at=awarded_at,
            source=record["source"],
            granted_by=optional_text(record["granted_by"]),
            reason=optional_text(record["reason"]),
            expires_at=utc(record["expires_at"]),
        )

    def change(self, record: Record | Mapping[str, Any]) -> AwardChange:
        """The `AwardChange` of a row of the history table."""
        at = utc(record["at"])
        assert at is not None
        return AwardChange(
            id=int(record["id"]),
            action=record["action"],
            user_id=text(record["user_id"]),
            slug=text(record["slug"]),
            level=int(record["level"]),
            at=at,
            source=record["source"],
            by=optional_text(record["actor"]),
            reason=optional_text(record["reason"]),
        )

    def returned(self, new_awards: Sequence[NewAward], rows: Sequence[Any]) -> list[Award]:
        """The awards of `new_awards` that an insert's `RETURNING id, user_id, slug, level,
        award_key` rows say it recorded, in the order of `new_awards`."""
        ids = {(row[1], row[2], row[3], row[4]): int(row[0]) for row in rows}
        return [
            self.recorded(award, ids[key])
            for award in new_awards
            if (key := (award.user_id, award.slug, award.level, award.award_key)) in ids
        ]

    def recorded(self, award: NewAward, id: int) -> Award:
        """The `Award` that inserting `award` recorded with `id`."""
        detail = self._describe(award.slug, award.level)
        return Award(
            id=id,
            user_id=award.user_id,
            slug=award.slug,
            level=award.level,
            name=detail.name if detail else None,
            description=detail.description if detail else None,
            awarded_at=award.awarded_at.astimezone(UTC),
            source=award.source,
            granted_by=award.granted_by,
            reason=award.reason,
            expires_at=None if award.expires_at is None else award.expires_at.astimezone(UTC),
        )

    def granted(self, recorded: Sequence[Award]) -> list[dict[str, Any]]:
        """The history rows of `recorded`, awards this insert recorded."""
        return [
            Change(self.stored(a.awarded_at), a.granted_by, a.reason).row(a, "granted")
            for a in recorded
        ]


def backfill_reason(level: int) -> str:
    """The history's reason for an award that a backfill revoked, keeping `level` (0: none)."""
    gives = f"level {level}" if level else "no level"
    return f"Backfill: award() now gives {gives}."


def ordered(new_awards: Sequence[NewAward]) -> list[NewAward]:
    """`new_awards` in the order every insert takes them."""
    # A fixed order makes concurrent multi-row inserts take their row locks in the same
    # order, so two events (or two group commits of several users' events) that award the same
    # levels cannot deadlock each other. Badge first: the level counts' rows, which every
    # user's award of a level updates, are then locked in their order too.
    return sorted(new_awards, key=lambda a: (a.slug, a.level, a.user_id, a.award_key))


def _skipped(new_awards: Sequence[NewAward], recorded: Sequence[Award]) -> list[NewAward]:
    """The awards of `new_awards` that an insert did not record, of badges held once that
    expire: those whose key an expired award may hold."""
    keys = {(a.user_id, a.slug, a.level) for a in recorded}
    return [
        a
        for a in new_awards
        if a.expires_at is not None
        and a.award_key == ""
        and (a.user_id, a.slug, a.level) not in keys
    ]


def _replaced(skipped: Sequence[NewAward], expired: Sequence[Award]) -> list[NewAward]:
    """The awards of `skipped` whose key an expired award held: to insert again."""
    keys = {(a.user_id, a.slug, a.level) for a in expired}
    return [a for a in skipped if (a.user_id, a.slug, a.level) in keys]


def text(value: str | bytes) -> str:
    """A text column's value; the MySQL columns are VARBINARY (see tables.py): bytes."""
    return value.decode() if isinstance(value, bytes) else value


def optional_text(value: str | bytes | None) -> str | None:
    return None if value is None else text(value)


def utc(value: datetime.datetime | None) -> datetime.datetime | None:
    """A datetime column's value, aware, in UTC: SQLite and MySQL give it naive, in UTC."""
    if value is None:
        return None
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).astimezone(UTC)


@dataclasses.dataclass(frozen=True)
class Change:
    """When a change of the history happened, who made it and why."""

    at: datetime.datetime
    by: str | None = None
    reason: str | None = None

    def row(self, award: Award, action: str) -> dict[str, Any]:
        """The history row of `action` on `award`."""
        return {
            "award_id": award.id,
            "user_id": award.user_id,
            "slug": award.slug,
            "level": award.level,
            "action": action,
            "at": self.at,
            "source": award.source,
            "actor": self.by,
            "reason": self.reason,
        }


#: The columns an insert gives, in the order of its statement text.
COLUMNS = (
    "user_id",
    "slug",
    "level",
    "awarded_at",
    "award_key",
    "source",
    "granted_by",
    "reason",
    "expires_at",
    "points",
)
#: What the inserts of PostgreSQL and SQLite return: the id and the unique constraint's columns.
RETURNING = "RETURNING id, user_id, slug, level, award_key"
# The options databases takes from a URL's query string for its pools (databases.backends.*).
_POOL_OPTIONS = frozenset({"min_size", "max_size", "pool_recycle"})


#: How many keys one query of `_replace_expired()` names: three parameters each, under SQLite's
#: oldest limit of 999.
KEYS_PER_QUERY = 300

#: The columns that revisions after the first added: a database without them is not migrated.
ADDED_COLUMNS = (
    "revoked_at",
    "source",
    "granted_by",
    "reason",
    "expires_at",
    "points",
    "seen_at",
)


def held(now: datetime.datetime) -> sa.ColumnElement[bool]:
    """The awards held at `now`: neither revoked nor expired."""
    return sa.and_(
        awards.c.revoked_at.is_(None),
        sa.or_(awards.c.expires_at.is_(None), awards.c.expires_at > now),
    )


def badge_filter(slug: str, level: int | None) -> list[sa.ColumnElement[bool]]:
    """The awards of a badge (of one level, if given)."""
    conditions = [awards.c.slug == slug]
    if level is not None:
        conditions.append(awards.c.level == level)
    return conditions


def _newest_first() -> tuple[sa.UnaryExpression[Any], ...]:
    return (awards.c.awarded_at.desc(), awards.c.id.desc())
