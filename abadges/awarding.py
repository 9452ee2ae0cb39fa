"""The one award flow: evaluate, key, record, announce.

The request path (`BadgeRegistry.possibly_award_badge`) and the worker (`BadgeRegistry.run_job`)
both run these steps, so a badge is awarded the same way wherever it is evaluated:

1. evaluate: each badge's `award()` on the state, its result checked into a level or nothing;
   a badge that raises is set aside with a note naming it and the event, and the others go on;
2. key: the award key that the unique constraint covers (`award_key()`);
3. record: one insert of the new awards, which skips what the table holds already;
4. announce: after commit, the notices (`abadges.notices`), then the `on_award` callbacks, once
   per award this call recorded.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio

from ._utils import maybe_await, shorten
from .awards import Action, Award, Source
from .base import Badge
from .exceptions import BadgeErrorGroup, BadgeNotRegisteredError, InvalidStateError
from .jobs import Job, check_frozen_state
from .notices import Publisher
from .storage.base import Change, NewAward, Settlement, Store, Written
from .storage.group_commit import GroupCommit

logger = logging.getLogger("abadges")

AwardCallback = Callable[[Award], Awaitable[None] | None]
UserLoader = Callable[[str], Awaitable[Any]]

#: Longest `event_key` a call may give.
MAX_EVENT_KEY_LENGTH = 255


def event_award_key(event: str, user_id: str, event_key: object) -> str:
    """The award and job key of an event that the caller named with `event_key`.

    The event and the user are part of it, so that one request id may key several events, or
    the same event for several users, without their awards or jobs colliding.
    """
    if not isinstance(event_key, str) or not 1 <= len(event_key) <= MAX_EVENT_KEY_LENGTH:
        raise InvalidStateError(
            f"event_key must be a str of 1 to {MAX_EVENT_KEY_LENGTH} characters naming this "
            f"occurrence of event {event!r}, such as a request or order id; got "
            f"{shorten(event_key)}."
        )
    parts = "\0".join((event, user_id, event_key)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(parts).hexdigest()[:32]


def award_key(badge: Badge, key: str | None) -> str:
    """The award key of a badge's award in an event or job keyed by `key` (None: unkeyed).

    Badges held once share the empty key, so the unique constraint holds each level once. A
    `multiple` badge's award gets the event's key, so that a retried event or a job that runs
    twice records it once, or a key of its own when the event has none, so its awards add up.
    """
    if not badge.multiple:
        return ""
    return key or uuid.uuid4().hex


async def freeze(
    event: str, badges: Iterable[Badge], state: Mapping[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[Exception]]:
    """The state each deferred badge's `freeze()` captures, checked to travel as JSON; and the
    errors of the badges whose `freeze()` failed, each noted with the badge and the event."""
    frozen: dict[str, dict[str, Any]] = {}
    errors: list[Exception] = []
    for badge in badges:
        try:
            frozen[badge.slug] = check_frozen_state(
                badge.slug, await maybe_await(badge.freeze(**state))
            )
        except Exception as exc:
            errors.append(_noted(exc, badge.slug, event, deferred=True))
    return frozen, errors


@dataclasses.dataclass
class Outcome:
    """What a run of the flow did: the awards it recorded, those that stopped being held
    (with the history's action), and the errors of the badges that failed (each with its
    note)."""

    recorded: list[Award] = dataclasses.field(default_factory=list)
    errors: list[Exception] = dataclasses.field(default_factory=list)
    ended: list[tuple[Action, Award]] = dataclasses.field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.recorded += other.recorded
        self.errors += other.errors
        self.ended += other.ended

    def result(self, event: str) -> list[Award]:
        """The recorded awards, or one flat `BadgeErrorGroup` if any badge failed."""
        if self.errors:
            count = len(self.errors)
            raise BadgeErrorGroup(
                f"{count} badge{'s' if count > 1 else ''} failed on event {event!r}",
                self.errors,
                self.recorded,
            )
        return self.recorded


class AwardFlow:
    """The flow over one store: `callbacks` is the registry's live list of `on_award`
    callbacks, `load_user` turns a job's stored identity back into a user, `get_badge` finds a
    job's badges by slug; `notices` publishes each change after commit (None: not
    published)."""

    def __init__(
        self,
        store: Store,
        callbacks: Sequence[AwardCallback],
        load_user: UserLoader,
        get_badge: Callable[[str], Badge],
        revoke_callbacks: Sequence[AwardCallback] = (),
        notices: Publisher | None = None,
    ) -> None:
        self.store = store
        self._inserts = GroupCommit(store)
        self._notices = notices
        self._callbacks = callbacks
        self._revoke_callbacks = revoke_callbacks
        self._load_user = load_user
        self._get_badge = get_badge

    async def award(
        self,
        event: str,
        user_id: str,
        evaluations: Iterable[tuple[Badge, Mapping[str, Any]]],
        awarded_at: datetime.datetime,
        key: str | None,
        source: Source = "event",
    ) -> Outcome:
        """Evaluate each badge on its state, then record and announce what they award."""
        errors: list[Exception] = []
        new_awards: list[NewAward] = []
        settlements: list[Settlement] = []
        now = datetime.datetime.now(datetime.UTC)
        for badge, state in evaluations:
            try:
                level = badge.level_awarded(await maybe_await(badge.award(**state)))
                new = None
                if level is not None:
                    new = NewAward(
                        user_id,
                        badge.slug,
                        level,
                        awarded_at,
                        award_key(badge, key),
                        source,
                        expires_at=badge.expires_at(awarded_at),
                        points=badge.points_of(level),
                    )
            except Exception as exc:
                errors.append(_noted(exc, badge.slug, event, badge.deferred))
                continue
            if badge.settles and (new is not None or badge.temporary):
                settlements.append(settlement(badge, user_id, new, now))
            elif new is not None:
                new_awards.append(new)
        outcome = await self.record(new_awards, settlements, event, source == "deferred")
        outcome.errors[:0] = errors
        return outcome

    async def run_job(self, job: Job) -> Outcome:
        """Evaluate a job's badges on their frozen state, for the user the job names.

        Loading the user and recording may raise: nothing of the job is then recorded, and
        running it again is safe.
        """
        user = await maybe_await(self._load_user(job.user_id))
        evaluations: list[tuple[Badge, Mapping[str, Any]]] = []
        unknown: list[Exception] = []
        for slug, state in job.states.items():
            try:
                evaluations.append((self._get_badge(slug), {**state, "user": user}))
            except BadgeNotRegisteredError as exc:
                unknown.append(_noted(exc, slug, job.event, deferred=True))
        awarded_at = job.awarded_at or datetime.datetime.now(datetime.UTC)
        outcome = await self.award(
            job.event, job.user_id, evaluations, awarded_at, job.key, "deferred"
        )
        outcome.errors[:0] = unknown
        return outcome

    async def record(
        self,
        new_awards: Sequence[NewAward],
        settlements: Sequence[Settlement] = (),
        event: str = "",
        deferred: bool = False,
        announce: bool = True,
        notify: bool = True,
    ) -> Outcome:
        """Insert the awards that are new, then apply the settlements of `temporary` and
        `replaces_lower` badges; once each write has committed, publish its changes (unless
        not `notify`) and announce its awards to the `on_award` callbacks, and those that
        stopped being held to the `on_revoke` callbacks (unless not `announce`).

        The insert's error is raised; a settlement's error is returned in the outcome, after
        what the others recorded, noted with its badge and the `event` when there is one.

        The insert joins those of the calls that wait meanwhile (`abadges.storage.group_commit`):
        one statement and one commit for them all, each call getting its own awards and errors.

        Shielded from cancellation as one step: a call cancelled (a request timeout, a client
        that went away) once its insert is on its way finishes the writes, the notices
        (within their timeout) and the callbacks before the cancellation takes effect, so no
        committed award goes unannounced.
        """
        outcome = Outcome()
        with anyio.CancelScope(shield=True):
            if new_awards:
                written = await self._inserts.insert(new_awards)
                outcome.add(await self._announce(written, announce, notify))
            for item in settlements:
                try:
                    written = await self.store.settle(item)
                except Exception as exc:
                    # A grant has no event: its caller gets the error as it is.
                    outcome.errors.append(_noted(exc, item.slug, event, deferred) if event else exc)
                else:
                    outcome.add(await self._announce(written, announce, notify))
        return outcome

    async def _publish(self, changes: Sequence[tuple[Action, Award]]) -> None:
        if self._notices is not None:
            await self._notices.publish(changes)

    async def _announce(self, written: Written, announce: bool, notify: bool) -> Outcome:
        """Publish what a write did (unless not `notify`) and call the callbacks (unless not
        `announce`); return it as an outcome."""
        if notify:
            await self._publish([*written.ended, *[("granted", a) for a in written.recorded]])
        if announce:
            ended = [award for _, award in written.ended]
            await _announce(ended, self._revoke_callbacks, "on_revoke")
            await _announce(written.recorded, self._callbacks, "on_award")
        return Outcome(written.recorded, ended=written.ended)

    async def expire(self, limit: int) -> list[Award]:
        """Move up to `limit` expired awards to the history (`Store.expire()`), then publish
        and announce them to the `on_revoke` callbacks: shielded as one step, as `record()`
        is."""
        with anyio.CancelScope(shield=True):
            expired = await self.store.expire(limit)
            await self._publish([("expired", award) for award in expired])
            await _announce(expired, self._revoke_callbacks, "on_revoke")
        return expired

    async def revoke_above(
        self,
        targets: Sequence[tuple[str, str, int]],
        at: datetime.datetime,
        announce: bool,
        notify: bool = True,
    ) -> list[Award]:
        """End the awards above each target's level (`Store.revoke_above()`), then publish
        them (unless not `notify`) and announce them to the `on_revoke` callbacks (unless not
        `announce`): shielded as one step, as `record()` is."""
        with anyio.CancelScope(shield=True):
            ended = await self.store.revoke_above(targets, at)
            if notify:
                await self._publish([("revoked", award) for award in ended])
            if announce:
                await _announce(ended, self._revoke_callbacks, "on_revoke")
        return ended

    async def revoke(
        self, user_id: str, badge: Badge, level: int | None, change: Change
    ) -> list[Award]:
        """End the user's held awards of `badge` (of `level`, if given), with their history
        rows, then publish and announce them to the `on_revoke` callbacks: shielded as one
        step, as `record()` is."""
        with anyio.CancelScope(shield=True):
            ended = await self.store.revoke(user_id, badge.slug, level, change, badge.multiple)
            await self._publish([("revoked", award) for award in ended])
            await _announce(ended, self._revoke_callbacks, "on_revoke")
        return ended


async def _announce(awards: Sequence[Award], callbacks: Sequence[AwardCallback], kind: str) -> None:
    """Call each callback with each award; a callback that raises is logged."""
    for award in awards:
        for callback in callbacks:
            try:
                await maybe_await(callback(award))
            except Exception:
                logger.exception(
                    "%s callback %r failed for badge %r level %d of user %r.",
                    kind,
                    callback,
                    award.slug,
                    award.level,
                    award.user_id,
                )


def settlement(
    badge: Badge, user_id: str, new: NewAward | None, at: datetime.datetime
) -> Settlement:
    """What recording `new` (None: `award()` gave nothing) does to the user's other levels of
    `badge`, a `temporary` or `replaces_lower` one, at `at`."""
    return Settlement(
        user_id,
        badge.slug,
        new,
        at,
        revoke_above=badge.temporary,
        replace_lower=badge.replaces_lower,
    )


def _noted(exc: Exception, slug: str, event: str, deferred: bool) -> Exception:
    exc.add_note(f"Raised by {'deferred ' if deferred else ''}badge {slug!r} on event {event!r}.")
    return exc
