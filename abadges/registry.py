"""`BadgeRegistry`: the facade over badge definitions, settings, the connection, the award flow
(`awarding.py`) and the queries."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import types
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
)
from typing import Any, TypeVar

import anyio
import databases

from . import presentation
from ._connection import NOT_CONNECTED, Connection
from ._utils import import_from_string, maybe_await, shorten, storable
from .awarding import AwardCallback, AwardFlow, Outcome, award_key, event_award_key, freeze
from .awards import Award, AwardChange
from .backfill import (
    MAX_CHECKPOINT_LENGTH,
    BackfillReport,
    Evaluation,
    Options,
    Progress,
    StateFunction,
)
from .backfill import backfill as run_backfill
from .backfill_jobs import RemoteBatches
from .base import Badge, BadgeDetail, check_definition
from .config import Settings, UserLoader
from .exceptions import (
    BadgeAlreadyRegisteredError,
    BadgeNotRegisteredError,
    ConfigurationError,
    CredentialError,
    InvalidLevelError,
    InvalidStateError,
    NotConnectedError,
)
from .jobs import Job, dumps, loads
from .notices import AwardNotice, Publisher, check_last_id
from .openbadges.issuing import CredentialIssuer
from .openbadges.verifying import verify
from .queue import JobQueue
from .standings import BadgeProgress, BadgeStats, RankBy, Standing
from .storage import open_store
from .storage.base import Change, MigrationStatus, NewAward, Settlement, Store
from .storage.totals import Totals
from .subscriptions import subscribe as read_notices
from .tables import MAX_BY_LENGTH, MAX_REASON_LENGTH
from .users import IDENTITY_TYPES, UserRef, identify, identify_known

logger = logging.getLogger("abadges")

#: Largest `limit` and `offset` of a query: the largest integer SQLite and PostgreSQL take there.
MAX_ROWS = 2**63 - 1

BadgeClass = TypeVar("BadgeClass", bound=type[Badge])
Callback = TypeVar("Callback", bound=AwardCallback)


class BadgeRegistry:
    """The badges of an application, and the awards they have given.

    `abadges.badges` is the default instance; build your own for tests or for several
    independent badge sets.
    """

    def __init__(self) -> None:
        self._badges: dict[str, Badge] = {}
        self._events: dict[str, list[Badge]] = {}
        self._callbacks: list[AwardCallback] = []
        self._revoke_callbacks: list[AwardCallback] = []
        self._overrides: dict[str, Any] = {}
        self._settings: Settings | None = None
        self._connection: Connection | None = None
        self._user_loader: UserLoader | None = None
        self._issuer: CredentialIssuer | None = None

    # Definitions ------------------------------------------------------------------------------

    def register(self, badge_class: BadgeClass) -> BadgeClass:
        """Validate and register a `Badge` subclass; returns it, so it also works as a decorator.

        Registering the same class again does nothing; another class with a registered slug
        raises `BadgeAlreadyRegisteredError`.
        """
        check_definition(badge_class)
        current = self._badges.get(badge_class.slug)
        if current is not None:
            if type(current) is badge_class:
                return badge_class
            raise BadgeAlreadyRegisteredError(
                f"{badge_class.__qualname__}.slug is {badge_class.slug!r}, which "
                f"{type(current).__qualname__} already registered."
            )
        badge = badge_class()
        self._badges[badge.slug] = badge
        for event in dict.fromkeys(badge.events):
            self._events.setdefault(event, []).append(badge)
        return badge_class

    @property
    def registered(self) -> Mapping[str, Badge]:
        """The registered badges by slug, in registration order: a read-only view."""
        return types.MappingProxyType(self._badges)

    def get_badge(self, slug: str) -> Badge:
        """The registered badge with this slug; `BadgeNotRegisteredError` if there is none."""
        try:
            return self._badges[slug]
        except (KeyError, TypeError):  # TypeError: an unhashable "slug", a list say.
            # At most ten slugs are listed: a poison job naming thousands of unknown badges
            # must not make thousands of messages listing thousands of slugs.
            known = sorted(self._badges)
            listed = f"{known[:10]}" + (f" and {len(known) - 10} more" if len(known) > 10 else "")
            raise BadgeNotRegisteredError(
                f"No badge with slug {shorten(slug)} is registered; registered slugs: {listed}."
            ) from None

    def on_award(self, callback: Callback) -> Callback:
        """Call `callback(award)`, plain or async, once for each award recorded from now on.

        Callbacks run after the award is committed, in the process that recorded it. A callback
        that raises is logged; the award stays and the other callbacks still run.
        """
        self._callbacks.append(callback)
        return callback

    def on_revoke(self, callback: Callback) -> Callback:
        """Call `callback(award)`, plain or async, once for each award that stops being held
        from now on (revoked, expired, replaced, or revoked by a temporary badge), with the
        award as it was. Like `on_award`: after commit, in the process that made the change;
        a callback that raises is logged."""
        self._revoke_callbacks.append(callback)
        return callback

    # Settings and connection ------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force: those of the connection, or what `connect()` would use."""
        if self._settings is not None:
            return self._settings
        return dataclasses.replace(Settings.from_env(), **self._overrides)

    def configure(self, **overrides: Any) -> None:
        """Override settings (see `abadges.config.Settings`); the `ABADGES_*` variables and the
        defaults fill in the rest when `connect()` runs."""
        if self._connection is not None:
            raise ConfigurationError("configure() was called while connected; disconnect first.")
        known = {field.name for field in dataclasses.fields(Settings)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"configure() got unknown setting(s) {unknown}; the settings are {sorted(known)}."
            )
        # Build the settings now, so that a bad value fails here and is not kept.
        dataclasses.replace(Settings.from_env(), **{**self._overrides, **overrides})
        self._overrides.update(overrides)

    async def connect(self) -> None:
        """Open the database, and the Redis client that queues deferred badges (it connects on
        first use). Does nothing when already connected."""
        if self._connection is not None and self._connection.closing:
            await self._connection.done.wait()  # A disconnect() in progress: connect after it.
        if self._connection is not None:
            return
        settings = self.settings
        loader = settings.user_loader
        if isinstance(loader, str):
            loader = import_from_string(loader, "user_loader")
            if not callable(loader):
                raise ConfigurationError(
                    f"user_loader {settings.user_loader!r} names {loader!r}, which is not callable."
                )
        store = open_store(settings.database_url, self._describe)
        await store.connect()
        queue = notices = None
        if settings.queue == "redis":
            queue = JobQueue(settings.redis_url, settings.queue_name)
        if settings.publishes_notices:
            notices = Publisher(
                settings.redis_url, settings.notices_stream, settings.notices_maxlen
            )
        flow = AwardFlow(
            store,
            self._callbacks,
            self._load_user,
            self.get_badge,
            self._revoke_callbacks,
            notices,
        )
        self._settings, self._user_loader = settings, loader
        self._connection = Connection(store, flow, queue, notices)

    async def disconnect(self) -> None:
        """Close the database and Redis. Does nothing when not connected.

        Calls that start once `disconnect()` has begun raise `NotConnectedError` before any
        badge runs. Calls in flight get up to `DISCONNECT_TIMEOUT` (10 s) to finish first;
        those still running then raise `NotConnectedError`."""
        connection = self._connection
        if connection is None:
            return
        if connection.closing:  # Another disconnect() is closing it: done when that is.
            await connection.done.wait()
            return
        try:
            await connection.close()
        finally:
            self._connection, self._settings = None, None
            connection.done.set()

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[BadgeRegistry]:
        """`connect()` on entry and `disconnect()` on exit, even when cancelled."""
        await self.connect()
        try:
            yield self
        finally:
            with anyio.CancelScope(shield=True):
                await self.disconnect()

    async def migrate(self) -> None:
        """Bring the database's abadges tables up to this version's schema: run abadges'
        Alembic migrations up to the latest (its version table is `abadges_alembic_version`).

        Safe to call at every start, and from several processes at once: they take turns on a
        lock, and the later ones find nothing to do. A table made by abadges 0.1 is upgraded in
        place, its awards kept. See the migrations page of the docs."""
        with self._call() as connection:
            await connection.store.migrate()

    async def create_tables(self) -> None:
        """An alias of `migrate()`, kept from the first version."""
        await self.migrate()

    async def migration_status(self) -> MigrationStatus:
        """The database's abadges schema revision (`current`, None before the first
        `migrate()`), and the latest this version of abadges has (`head`)."""
        with self._call() as connection:
            return await connection.store.migration_status()

    @property
    def database(self) -> databases.Database:
        """The `databases.Database` abadges is connected to, for your own tables in the same
        database: a user loader in the worker can read users over it instead of opening a
        second pool. `NotConnectedError` when not connected, or once `disconnect()` has
        begun."""
        with self._call() as connection:
            return connection.store.database

    # Awarding -----------------------------------------------------------------------------------

    async def possibly_award_badge(self, event: str, **state: Any) -> list[Award]:
        """Evaluate every badge listening to `event` for `state["user"]`; record what they award.

        `force_timestamp`, a timezone-aware datetime, sets `awarded_at`; `event_key`, a str
        naming this occurrence of the event, makes calling again with it safe: the awards of
        `multiple` badges and the deferred job are keyed by it, so a retried call records
        nothing twice. The badges see neither. Deferred badges are frozen and queued as one job
        for the worker (run in this call when the `queue` setting is "inline"). Returns the
        awards this call recorded. An unknown event does nothing.

        A badge that raises does not stop the others: their awards are recorded and announced
        first, then one `BadgeErrorGroup` holds the errors of every badge that failed (and a
        `QueueUnavailableError` if the job could not be queued), with the recorded awards in
        its `recorded`. Errors found before any badge runs are raised on their own.
        """
        badges = self._events.get(event)
        if not badges:
            logger.debug("No badge listens to event %r.", event)
            return []
        forced_at = _forced_timestamp(state.pop("force_timestamp", None))
        event_key = state.pop("event_key", None)
        if "user" not in state:
            raise InvalidStateError(
                f"possibly_award_badge({event!r}) needs a 'user' in its state; got {sorted(state)}."
            )
        user_id = identify(state["user"], self.settings.user_id)
        key = None if event_key is None else event_award_key(event, user_id, event_key)
        # Not connected: fail before any badge runs. The call keeps the connection it started
        # on: a disconnect() meanwhile waits for it, and never sends its jobs down the inline
        # path.
        with self._call() as connection:
            awarded_at = forced_at or datetime.datetime.now(datetime.UTC)
            inline = [(badge, state) for badge in badges if not badge.deferred]
            outcome = await connection.flow.award(event, user_id, inline, awarded_at, key)
            deferred = [badge for badge in badges if badge.deferred]
            frozen, errors = await freeze(event, deferred, state)
            outcome.errors += errors
            if frozen:
                try:
                    job = Job.create(event, user_id, awarded_at, frozen, key)
                    if connection.closed:  # Outlasted disconnect(): it closed the queue.
                        raise NotConnectedError(
                            f"disconnect() closed the connection while this call ran; "
                            f"deferred badges {sorted(frozen)} were not queued."
                        )
                    outcome.add(await self._defer(connection, job))
                except Exception as exc:
                    outcome.errors.append(exc)
            return outcome.result(event)

    async def run_job(self, payload: object) -> list[Award]:
        """Run a deferred job as the worker does: `payload` is the JSON object that the app
        queued. Returns the awards recorded; `InvalidJobError` if the payload is no abadges
        job; a `BadgeErrorGroup` (with `recorded`) when badges failed, a badge that this
        process does not know (`BadgeNotRegisteredError`) included. `abadges.worker` calls it.
        """
        job = Job.from_payload(payload)
        with self._call() as connection:
            outcome = await connection.flow.run_job(job)
        return outcome.result(job.event)

    async def _defer(self, connection: Connection, job: Job) -> Outcome:
        if connection.queue is not None:
            await connection.queue.enqueue(job)
            return Outcome()
        # Inline: the job goes through the JSON codec and runs as the worker would run it.
        return await connection.flow.run_job(Job.from_payload(loads(dumps(job.to_payload()))))

    async def _load_user(self, user_id: str) -> Any:
        """The user a deferred badge's `award()` gets: loaded, or a `UserRef`."""
        if self._user_loader is None:
            return UserRef(user_id)
        return await maybe_await(self._user_loader(user_id))

    # Queries ------------------------------------------------------------------------------------

    async def awards_for(self, user: Any) -> list[Award]:
        """The user's awards, newest first.

        In queries, `user` is a user object (identified by the `user_id` setting) or its
        identity itself, given as a str, int or UUID.
        """
        user_id = self._identify(user)
        with self._call() as connection:
            return await connection.store.awards_for(user_id)

    async def badge_count(self, user: Any) -> int:
        """How many awards the user holds."""
        user_id = self._identify(user)
        with self._call() as connection:
            return await connection.store.count_for(user_id)

    async def has_badge(self, user: Any, slug: str, level: int | None = None) -> bool:
        """Does the user hold badge `slug` (at `level`, if given)?"""
        self._check_badge(slug, level)
        user_id = self._identify(user)
        with self._call() as connection:
            return await connection.store.holds(user_id, slug, level)

    async def holders(
        self, slug: str, level: int | None = None, limit: int = 50, offset: int = 0
    ) -> list[Award]:
        """The awards of badge `slug` (of `level`, if given), newest first, a page at a time."""
        self._check_badge(slug, level)
        _check_page("holders", limit, offset)
        with self._call() as connection:
            return await connection.store.holders(slug, level, limit, offset)

    async def award_counts(self) -> dict[str, dict[int, int]]:
        """For every registered badge, how many awards each level has: `{slug: {level: n}}`."""
        with self._call() as connection:
            counts = await connection.store.counts()
        return {
            slug: {level: counts.get((slug, level), 0) for level in range(1, len(badge.levels) + 1)}
            for slug, badge in self._badges.items()
        }

    # Notices and the unseen list ---------------------------------------------------------------

    async def unseen(self, user: Any) -> list[Award]:
        """The user's awards held that `mark_seen()` has not marked, newest first: what a
        page shows as new. Every award starts unseen, whether or not its notice was
        published; those held before migration 0007 count as seen."""
        user_id = self._identify(user)
        with self._call() as connection:
            return await connection.store.unseen(user_id)

    async def mark_seen(self, user: Any, ids: Iterable[int] | None = None) -> int:
        """Mark the user's unseen awards seen: all of them, or those whose `Award.id` is in
        `ids`; return how many were marked. Ids of awards that are not the user's unseen
        awards held (another user's, seen already, revoked, unknown) are passed over and not
        counted; `ValueError` for ids that are not whole numbers, before anything is
        written."""
        chosen: list[int] | None = None
        if ids is not None:
            if isinstance(ids, str | bytes | Mapping) or not isinstance(ids, Iterable):
                raise ValueError(
                    f"mark_seen() ids must be None or an iterable of award ids; got {shorten(ids)}."
                )
            chosen = list(ids)
            for award_id in chosen:
                if isinstance(award_id, bool) or not isinstance(award_id, int):
                    raise ValueError(
                        f"mark_seen() ids must be award ids (int); got {shorten(award_id)} "
                        f"in {shorten(chosen)}."
                    )
            # Ids out of the columns' range name no award: passed over, as unknown ones are.
            chosen = [award_id for award_id in chosen if 0 < award_id <= MAX_ROWS]
        user_id = self._identify(user)
        with self._call() as connection:
            return await connection.store.mark_seen(
                user_id, chosen, datetime.datetime.now(datetime.UTC)
            )

    def subscribe(
        self, user: Any = None, last_id: str | None = None
    ) -> AsyncGenerator[AwardNotice, None]:
        """The notices of the Redis stream (the `notices_stream` setting) as they are
        published: an async iterator of `AwardNotice`s, of `user` only when given.

        It starts after `last_id`, the `id` of a notice (None: with what is published from its
        first read on), and goes on after each notice it gives, through a Redis restart too:
        it reconnects with backoff. What the stream has trimmed (it keeps about
        `notices_maxlen` notices) or lost is not given: rebuild from `unseen()` then. The
        subscriptions of one event loop share one reader of the stream, and one connection
        pool, which closing the last (`aclose()`, or leaving an `async for`) closes. It needs
        no `connect()`; `ConfigurationError` when notices are not published (the `notices`
        setting)."""
        settings = self.settings
        if not settings.publishes_notices:
            raise ConfigurationError(
                "subscribe() reads the notices stream, which is not published: the queue is "
                '"inline" and the notices setting is not True. configure(notices=True) (or '
                "ABADGES_NOTICES=true) to publish them to the Redis of redis_url."
            )
        user_id = None if user is None else self._identify(user)
        position = check_last_id(last_id)
        return read_notices(settings.redis_url, settings.notices_stream, user_id, position)

    # Presentation: progress, rarity, leaderboards ----------------------------------------------

    async def progress_for(
        self, user: Any, slug: str | None = None, **state: Any
    ) -> dict[str, BadgeProgress]:
        """How far `user` is toward the next level of each badge that defines `progress()`
        (of badge `slug` only, if given): `{slug: BadgeProgress}`. `progress(user=user,
        **state)` is called for each; a badge whose `progress()` gives None is left out."""
        chosen = self._badges.values() if slug is None else [self.get_badge(slug)]
        held = await self.awards_for(user)
        return await presentation.progress_for(chosen, held, {**state, "user": user})

    async def stats(self, total_users: int | None = None) -> list[BadgeStats]:
        """A `BadgeStats` for each level of each registered badge, in the order they were
        registered: its holders, and their share of the users who hold any badge (or of
        `total_users`, the site's users, when given)."""
        everyone = presentation.check_total_users(total_users)
        with self._call() as connection:
            return await presentation.stats(self._badges, Totals(connection.store), everyone)

    async def leaderboard(
        self,
        limit: int = 10,
        offset: int = 0,
        *,
        by: RankBy = "points",
        slug: str | None = None,
        since: datetime.datetime | None = None,
    ) -> list[Standing]:
        """The users with the most points (or, `by="awards"`, awards), of every badge or of
        badge `slug`, held now or, with `since`, awarded since then; a page at a time. Ties
        share a rank (1, 2, 2, 4) and are listed by user id."""
        _check_page("leaderboard", limit, offset)
        rank_by = presentation.check_rank_by("leaderboard", by)
        after = presentation.check_since("leaderboard", since)
        if slug is not None:
            self.get_badge(slug)
        with self._call() as connection:
            return await Totals(connection.store).leaderboard(limit, offset, rank_by, slug, after)

    async def standing(
        self,
        user: Any,
        *,
        by: RankBy = "points",
        slug: str | None = None,
        since: datetime.datetime | None = None,
    ) -> Standing | None:
        """`user`'s place on the leaderboard that `leaderboard()` gives with the same
        arguments, or None when the user holds nothing there."""
        rank_by = presentation.check_rank_by("standing", by)
        after = presentation.check_since("standing", since)
        if slug is not None:
            self.get_badge(slug)
        user_id = self._identify(user)
        with self._call() as connection:
            return await Totals(connection.store).standing(user_id, rank_by, slug, after)

    async def grant(
        self,
        user: Any,
        slug: str,
        level: int | None = None,
        *,
        by: str | None = None,
        reason: str | None = None,
        force_timestamp: datetime.datetime | None = None,
    ) -> Award | None:
        """Award badge `slug` (at `level`; None: its only level) by hand, with `source`
        "manual", `granted_by` `by` and `reason`; return the `Award`, or None when the user
        holds that level already (a `multiple` badge gets a new award each time). The level
        is checked as `award()`'s result is; the `on_award` callbacks run."""
        badge = self.get_badge(slug)
        if level is None:
            if len(badge.levels) > 1:
                raise InvalidLevelError(
                    f"grant() of badge {slug!r} needs a level: it has {len(badge.levels)} levels."
                )
            level = 1
        badge.check_level(level)
        at = _forced_timestamp(force_timestamp) or datetime.datetime.now(datetime.UTC)
        user_id = self._identify(user)
        new = NewAward(
            user_id,
            slug,
            level,
            at,
            award_key(badge, None),
            "manual",
            _checked_text("by", by, MAX_BY_LENGTH),
            _checked_text("reason", reason, MAX_REASON_LENGTH),
            badge.expires_at(at),
            badge.points_of(level),
        )
        with self._call() as connection:
            if badge.settles:
                # A grant revokes nothing above it; a level below one held is not granted.
                now = datetime.datetime.now(datetime.UTC)
                settled = Settlement(user_id, slug, new, now, replace_lower=badge.replaces_lower)
                outcome = await connection.flow.record([], [settled])
            else:
                outcome = await connection.flow.record([new])
        if outcome.errors:
            raise outcome.errors[0]
        return outcome.recorded[0] if outcome.recorded else None

    async def revoke(
        self,
        user: Any,
        slug: str,
        level: int | None = None,
        *,
        by: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Take away the user's awards of badge `slug` (of `level`, if given); return how many.

        Each is written to the history as "revoked", with `by` and `reason`, and announced to
        the `on_revoke` callbacks. A badge held once can be earned again afterwards. A revoked
        award of a `multiple` badge stays revoked: calling again with the `event_key` that gave
        it, or running its job again, does not bring it back.
        """
        self._check_badge(slug, level)
        change = Change(
            datetime.datetime.now(datetime.UTC),
            _checked_text("by", by, MAX_BY_LENGTH),
            _checked_text("reason", reason, MAX_REASON_LENGTH),
        )
        user_id = self._identify(user)
        with self._call() as connection:
            ended = await connection.flow.revoke(user_id, self._badges[slug], level, change)
        return len(ended)

    async def history(
        self, user: Any = None, slug: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[AwardChange]:
        """The changes of what users hold (granted, revoked, expired, replaced), newest first,
        a page at a time: of one user, of one badge, or of all. A slug need not be registered:
        the history keeps the changes of badges since removed."""
        _check_page("history", limit, offset)
        user_id = None if user is None else self._identify(user)
        if slug is not None and not isinstance(slug, str):
            raise ValueError(f"history() slug must be None or a str; got {shorten(slug)}.")
        with self._call() as connection:
            return await connection.store.history(user_id, slug, limit, offset)

    async def expire_awards(self, batch_size: int = 1000) -> int:
        """Move every award that has expired to the history as "expired", announce each to the
        `on_revoke` callbacks, and return how many.

        The worker runs it every minute (see the lifecycle page); call it yourself where no
        worker runs. Expired awards count in no query before it runs, and can be earned again
        at once: it only writes their history and calls the callbacks. It works in
        transactions of `batch_size` awards; several processes may run it at once, and each
        award is moved by one of them."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"expire_awards() batch_size must be a whole number above 0; "
                f"got {shorten(batch_size)}."
            )
        moved = 0
        with self._call() as connection:
            while True:
                batch = await connection.flow.expire(batch_size)
                moved += len(batch)
                if len(batch) < batch_size:
                    return moved

    # Open Badges --------------------------------------------------------------------------------

    def issuer_profile(self) -> dict[str, Any]:
        """The issuer's Open Badges `Profile`, as a JSON-ready dict (see the Open Badges page of
        the docs); `ConfigurationError` when the `openbadges` setting is not given."""
        return self._credential_issuer().issuer_profile()

    def achievement(self, slug: str, level: int | None = None) -> dict[str, Any]:
        """The Open Badges `Achievement` of a registered badge's level (a badge of one level
        needs none)."""
        issuer = self._credential_issuer()
        badge = self.get_badge(slug)
        return issuer.achievement(badge, badge.check_level(1 if level is None else level))

    def jwks(self) -> dict[str, Any]:
        """The JWK Set of the public keys credentials are signed with: the signing key's and
        the `previous_keys`, each named by its `kid`."""
        return self._credential_issuer().jwks()

    async def credential(self, award_id: int) -> dict[str, Any]:
        """The `OpenBadgeCredential` of a held award, as a JSON-ready dict; `CredentialError`
        when no award has that id, or when it was revoked, replaced or has expired."""
        issuer = self._credential_issuer()
        if isinstance(award_id, bool) or not isinstance(award_id, int) or award_id < 1:
            raise ValueError(
                f"credential() award_id must be a whole number above 0; got {shorten(award_id)}."
            )
        with self._call() as connection:
            state = await connection.store.award_state(award_id)
        if state is None:
            raise CredentialError(f"No award has the id {award_id}: it has no credential.")
        if isinstance(state, str):
            raise CredentialError(
                f"Award {award_id} was {state}: a credential is issued for held awards only."
            )
        badge = self._badges.get(state.slug)
        if badge is None or state.name is None:
            raise CredentialError(
                f"Award {award_id} is of badge {state.slug!r} level {state.level}, which is not "
                "registered: its achievement is unknown."
            )
        return await issuer.credential(badge, state)

    async def credential_jwt(self, award_id: int) -> str:
        """The credential of a held award (see `credential()`) as a VC-JWT signed with the
        signing key, its `kid` in the header."""
        return self._credential_issuer().sign(await self.credential(award_id))

    async def status_list(self) -> str:
        """The status list: a `BitstringStatusListCredential` as a signed VC-JWT, whose bit
        `i` is set when award `i` was revoked or replaced. Third parties give it to
        `abadges.openbadges.verify()`."""
        issuer = self._credential_issuer()
        with self._call() as connection:
            revoked = await connection.store.revoked_award_ids()
        return issuer.status_list(revoked, datetime.datetime.now(datetime.UTC))

    async def verify_credential(self, token: str) -> dict[str, Any]:
        """The credential of the VC-JWT `token` when its signature, its dates and its award's
        state in the database all hold; else `CredentialError` saying which failed."""
        issuer = self._credential_issuer()
        credential = verify(token, issuer.jwks())
        award_id = issuer.award_id(credential)
        if award_id is None:
            raise CredentialError(
                f"Credential {shorten(credential.get('id'))} is not one of this issuer's: its "
                f"credentials are under {issuer.settings.base_url}/credentials/."
            )
        with self._call() as connection:
            state = await connection.store.award_state(award_id)
        if not isinstance(state, Award):
            how = "no longer exists" if state is None else f"was {state}"
            raise CredentialError(f"Credential {credential['id']} is not valid: its award {how}.")
        return credential

    def _credential_issuer(self) -> CredentialIssuer:
        """The issuer of the `openbadges` setting in force, built (its keys loaded) once."""
        settings = self.settings.openbadges
        if settings is None:
            raise ConfigurationError(
                "Open Badges are not set up: call badges.configure(openbadges="
                "OpenBadgesSettings(...)) (see the Open Badges page of the docs)."
            )
        if self._issuer is None or self._issuer.settings is not settings:
            self._issuer = CredentialIssuer(settings)
        return self._issuer

    # Backfill -----------------------------------------------------------------------------------

    async def backfill(
        self,
        users: Iterable[Any] | AsyncIterable[Any],
        *,
        slugs: Iterable[str] | None = None,
        state: StateFunction | None = None,
        dry_run: bool = False,
        revoke: bool = False,
        batch_size: int = 500,
        concurrency: int = 4,
        checkpoint: str | None = None,
        announce: bool = True,
        deferred: bool = False,
        progress: Progress | None = None,
        notify: bool = False,
    ) -> BackfillReport:
        """Evaluate badges for users who exist already, and record what they award, with
        `source` "backfill"; return a `BackfillReport`. See the backfill page of the docs.

        `users` is an iterable or async iterable of users, or of their identities (loaded by
        the user loader), read `batch_size` at a time; `concurrency` batches run at once.
        `slugs` names the badges (default: all, deferred ones included, evaluated here without
        `freeze()`); `state(user)`, plain or async, gives `award()` more state. `revoke`
        revokes the levels of badges held once that `award()` no longer gives; `dry_run`
        writes nothing and reports what would change; `announce=False` calls no callbacks;
        `notify=True` publishes the run's changes to the notices stream (by default a backfill
        publishes none, so that it does not flood the users' live notices; its awards are in
        their unseen lists either way).
        `checkpoint` names the run: its progress is saved, and the same call after a crash
        resumes where it stopped (give the same users in the same order). `deferred` sends
        each batch to the workers as a job (the `redis` queue); `progress(report)` is called
        after each batch with the running report.

        A badge that raises is counted in `failed`, with the first errors in `errors`; an
        error of the database ends the run with it, and a re-run records nothing twice.
        """
        if type(notify) is not bool:
            raise TypeError(f"backfill() notify must be True or False; got {shorten(notify)}.")
        options = self._backfill_options(slugs, state, dry_run, revoke, announce, notify)
        for name, value in (("batch_size", batch_size), ("concurrency", concurrency)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"backfill() {name} must be a whole number above 0; got {shorten(value)}."
                )
        _check_checkpoint(checkpoint, dry_run)
        if progress is not None and not callable(progress):
            raise TypeError(f"backfill() progress must be callable; got {shorten(progress)}.")
        if isinstance(users, str | bytes | Mapping) or not isinstance(
            users, Iterable | AsyncIterable
        ):
            raise TypeError(
                "backfill() users must be an iterable or async iterable of users or of their "
                f"identities; got {shorten(users)}."
            )
        with self._call() as connection:
            async with contextlib.AsyncExitStack() as stack:
                batch = Evaluation(connection.flow, self._backfill_user, options).batch
                if deferred:
                    remote = RemoteBatches(
                        self._backfill_queue(connection, state), options, self._identify
                    )
                    batch = (await stack.enter_async_context(remote)).batch
                return await run_backfill(
                    users,
                    batch,
                    connection.store,
                    options,
                    checkpoint,
                    batch_size=batch_size,
                    concurrency=concurrency,
                    identify=self._identify,
                    progress=progress,
                )

    def _backfill_queue(self, connection: Connection, state: StateFunction | None) -> JobQueue:
        """The queue of a deferred backfill's batches."""
        if state is not None:
            raise ValueError(
                "backfill(deferred=True) cannot send state= to the workers: they load each "
                "user with the user loader; run it without deferred=True instead."
            )
        if connection.queue is None:
            raise ConfigurationError(
                "backfill(deferred=True) sends its batches to the workers through Redis: it "
                'needs the queue setting "redis", not "inline".'
            )
        return connection.queue

    def _backfill_options(
        self,
        slugs: Iterable[str] | None,
        state: StateFunction | None,
        dry_run: bool,
        revoke: bool,
        announce: bool,
        notify: bool,
    ) -> Options:
        if slugs is None:
            chosen = list(self._badges.values())
            if not chosen:
                raise ConfigurationError(
                    "backfill() has no badge to evaluate: none is registered. Register the "
                    "badges first; the abadges command imports the modules of ABADGES_BADGES "
                    "(or --badges)."
                )
        elif isinstance(slugs, str) or not isinstance(slugs, Iterable):
            raise TypeError(f"backfill() slugs must be a list of slugs; got {shorten(slugs)}.")
        else:
            chosen = [self.get_badge(slug) for slug in dict.fromkeys(slugs)]
        if not chosen:
            raise ValueError("backfill() has no badge to evaluate: slugs is empty.")
        if state is not None and not callable(state):
            raise TypeError(f"backfill() state must be callable; got {shorten(state)}.")
        return Options(chosen, state, dry_run, revoke, announce, notify)

    async def _backfill_user(self, item: Any) -> tuple[str, Any]:
        """The identity of an item of a backfill's users, and the user `award()` gets."""
        if isinstance(item, IDENTITY_TYPES):
            user_id = self._identify(item)
            return user_id, await self._load_user(user_id)
        return identify(item, self.settings.user_id), item

    # Helpers ------------------------------------------------------------------------------------

    def _call(self) -> contextlib.AbstractContextManager[Connection]:
        """The connection, for one call in flight (see `abadges._connection`)."""
        if self._connection is None:
            raise NotConnectedError(NOT_CONNECTED)
        return self._connection.call()

    def _connected_store(self) -> Store:
        """The store, for tests that reach under the registry."""
        with self._call() as connection:
            return connection.store

    def _identify(self, user: Any) -> str:
        return identify_known(user, self.settings.user_id)

    def _check_badge(self, slug: str, level: int | None) -> None:
        badge = self.get_badge(slug)
        if level is not None:
            badge.check_level(level)

    def _describe(self, slug: str, level: int) -> BadgeDetail | None:
        badge = self._badges.get(slug)
        if badge is None or not 1 <= level <= len(badge.levels):
            return None
        return badge.detail(level)

    # Settings for a while -----------------------------------------------------------------------

    @contextlib.contextmanager
    def configured(self, **overrides: Any) -> Iterator[BadgeRegistry]:
        """`configure(**overrides)` for the length of a `with` block: on exit, even by an
        exception, the settings configured before the block are back.

        Like `configure()`, it needs the registry disconnected. Disconnect inside the block: a
        connection still open at its end keeps the settings it was opened with, and the restored
        ones apply from the next `connect()`. The pytest plugin's fixtures use it to connect
        `abadges.badges` to a scratch database for one test.
        """
        previous = dict(self._overrides)
        self.configure(**overrides)
        try:
            yield self
        finally:
            self._overrides = previous


def _check_checkpoint(checkpoint: object, dry_run: bool) -> None:
    if checkpoint is None:
        return
    if (
        not isinstance(checkpoint, str)
        or not 1 <= len(checkpoint) <= MAX_CHECKPOINT_LENGTH
        or not storable(checkpoint)
    ):
        raise ValueError(
            f"backfill() checkpoint must be None or a name of 1 to {MAX_CHECKPOINT_LENGTH} "
            f"characters; got {shorten(checkpoint)}."
        )
    if dry_run:
        raise ValueError(
            "backfill() checkpoint and dry_run go apart: a dry run writes nothing, "
            "checkpoints included."
        )


def _check_page(call: str, limit: object, offset: object) -> None:
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROWS:
            raise ValueError(
                f"{call}() {name} must be a whole number from 0 to {MAX_ROWS}; "
                f"got {shorten(value)}."
            )


def _checked_text(name: str, value: object, longest: int) -> str | None:
    """A grant's or a revoke's `by` or `reason`: None, or a str of 1 to `longest` characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= longest:
        raise ValueError(
            f"{name} must be None or a str of 1 to {longest} characters; got {shorten(value)}."
        )
    return value


def _forced_timestamp(force_timestamp: object) -> datetime.datetime | None:
    if force_timestamp is None:
        return None
    if not isinstance(force_timestamp, datetime.datetime) or force_timestamp.utcoffset() is None:
        raise InvalidStateError(
            f"force_timestamp must be a timezone-aware datetime; got {force_timestamp!r}. "
            "Pass e.g. datetime(2024, 5, 1, tzinfo=timezone.utc)."
        )
    try:
        return force_timestamp.astimezone(datetime.UTC)
    except OverflowError:
        raise InvalidStateError(
            f"force_timestamp {force_timestamp!r} is outside the years 1 to 9999 once in UTC."
        ) from None
