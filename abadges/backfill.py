"""Backfill: evaluate badges for the users a site has already, and record what they award.

`BadgeRegistry.backfill()` runs it in these steps:

1. read: the users are read a batch at a time (`batch_size`), never all at once, from an
   iterable or an async iterable; an identity (str, int, UUID) is loaded by the user loader;
2. evaluate: each user's badges in turn, `award(user=..., **state(user))`; a badge that raises
   is counted as failed for that user, with a note naming the badge and the user, and the
   others go on;
3. write: the batch's awards in one conflict-ignoring insert (the store's), its revocations in
   one transaction, with `source="backfill"` on every award and history row; the settlements
   of `temporary` and `replaces_lower` badges one by one, as events make them;
4. checkpoint: once every batch up to a user is written, that position is saved, so that a
   run started again after a crash skips what is done.

`concurrency` batches are evaluated and written at once. `run()` drives the batches; who runs
a batch is given to it (`Evaluation.batch` in this process, or a worker's job: see
`abadges.backfill_jobs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio

from ._utils import maybe_await, shorten
from .awarding import AwardFlow
from .base import Badge
from .exceptions import BackfillJobError, CheckpointError
from .storage.base import Checkpoint, NewAward, Settlement, Store, StoredAward
from .tables import MAX_OPTIONS_LENGTH

#: How many errors a report keeps; the others are counted in `failed` only.
MAX_ERRORS = 20
#: Longest name of a checkpoint.
MAX_CHECKPOINT_LENGTH = 255

StateFunction = Callable[[Any], Any]
Progress = Callable[["BackfillReport"], object]
#: Turns an item of `users` into its identity and the user `award()` gets.
Resolve = Callable[[Any], Awaitable[tuple[str, Any]]]


@dataclasses.dataclass
class BadgeCounts:
    """What a backfill did with one badge: `evaluations` of `award()`, awards `granted`,
    awards `revoked` (or replaced), and user evaluations that `failed`."""

    evaluations: int = 0
    granted: int = 0
    revoked: int = 0
    failed: int = 0

    def add(self, other: BadgeCounts) -> None:
        self.evaluations += other.evaluations
        self.granted += other.granted
        self.revoked += other.revoked
        self.failed += other.failed


@dataclasses.dataclass
class BackfillReport:
    """What a backfill did (a dry run: would do): `users` read, the counts of each badge in
    `badges`, and their sums; `errors`, the first `MAX_ERRORS` errors, each with a note naming
    the badge and the user; `seconds` it took; `resumed`, the users a checkpoint said were done
    already, which this run skipped."""

    users: int = 0
    badges: dict[str, BadgeCounts] = dataclasses.field(default_factory=dict)
    errors: list[Exception] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    resumed: int = 0

    @property
    def evaluations(self) -> int:
        return sum(counts.evaluations for counts in self.badges.values())

    @property
    def granted(self) -> int:
        return sum(counts.granted for counts in self.badges.values())

    @property
    def revoked(self) -> int:
        return sum(counts.revoked for counts in self.badges.values())

    @property
    def failed(self) -> int:
        return sum(counts.failed for counts in self.badges.values())

    def add(self, other: BackfillReport) -> None:
        """Add the counts and errors of `other`, a batch's report."""
        self.users += other.users
        for slug, counts in other.badges.items():
            self.badges.setdefault(slug, BadgeCounts()).add(counts)
        self.errors += other.errors[: MAX_ERRORS - len(self.errors)]

    def note(self, exc: Exception, note: str) -> None:
        exc.add_note(note)
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(exc)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: what `abadges backfill --json` prints."""
        return {
            "users": self.users,
            "evaluations": self.evaluations,
            "granted": self.granted,
            "revoked": self.revoked,
            "failed": self.failed,
            "errors": [error_text(exc) for exc in self.errors],
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "badges": {slug: dataclasses.asdict(c) for slug, c in self.badges.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackfillReport:
        """The report of `to_dict()`'s data, its errors as `BackfillJobError`s."""
        return cls(
            users=data["users"],
            badges={slug: BadgeCounts(**c) for slug, c in data["badges"].items()},
            errors=[BackfillJobError(text) for text in data["errors"]],
            seconds=data["seconds"],
            dry_run=data["dry_run"],
            resumed=data["resumed"],
        )


def error_text(exc: BaseException) -> str:
    """`exc` on one line: its type, message and notes."""
    return " ".join([f"{type(exc).__name__}: {exc}", *getattr(exc, "__notes__", ())])


def backfill_key(user_id: str, slug: str) -> str:
    """The award key of a `multiple` badge's award by a backfill: one per user and badge, so
    that running a backfill again records nothing twice."""
    parts = "\0".join(("backfill", user_id, slug)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(parts).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Options:
    """A run's badges and options."""

    badges: Sequence[Badge]
    state: StateFunction | None = None
    dry_run: bool = False
    revoke: bool = False
    announce: bool = True
    #: Publish the run's changes to the notices stream (`abadges.notices`).
    notify: bool = False

    def fingerprint(self) -> str:
        """What a checkpoint records of the run, and a resumed run must repeat."""
        slugs = sorted(badge.slug for badge in self.badges)
        text = json.dumps({"badges": slugs, "revoke": self.revoke}, separators=(",", ":"))
        # Readable in a CheckpointError's message; a digest when it would not fit the column.
        return (
            text if len(text) <= MAX_OPTIONS_LENGTH else hashlib.sha256(text.encode()).hexdigest()
        )


@dataclasses.dataclass
class Plan:
    """What one batch's evaluations give: awards to record, (user_id, slug, level) whose
    levels above are to be revoked, and settlements."""

    awards: list[NewAward] = dataclasses.field(default_factory=list)
    revocations: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    settlements: list[Settlement] = dataclasses.field(default_factory=list)


BatchResult = tuple[BackfillReport, str | None]


class Evaluation:
    """Evaluates and writes batches in this process, through the award flow."""

    def __init__(self, flow: AwardFlow, resolve: Resolve, options: Options) -> None:
        self._flow = flow
        self._resolve = resolve
        self._options = options

    async def batch(self, items: Sequence[Any]) -> BatchResult:
        """Evaluate the badges for each user of `items`, then write (or, in a dry run, count)
        what they give; return the batch's report and the identity of its last user (None
        when it has none)."""
        options = self._options
        report = BackfillReport(len(items), {b.slug: BadgeCounts() for b in options.badges})
        report.dry_run = options.dry_run
        now = datetime.datetime.now(datetime.UTC)
        plan = Plan()
        last: str | None = None
        for item in items:
            last = None
            try:
                user_id, user = await self._resolve(item)
                last = user_id
                extra = {} if options.state is None else await maybe_await(options.state(user))
                state = {**extra, "user": user}
            except Exception as exc:
                for counts in report.badges.values():
                    counts.failed += 1
                report.note(exc, f"Raised while loading user {shorten(item)} for a backfill.")
                continue
            for badge in options.badges:
                counts = report.badges[badge.slug]
                counts.evaluations += 1
                try:
                    level = badge.level_awarded(await maybe_await(badge.award(**state)))
                except Exception as exc:
                    counts.failed += 1
                    report.note(exc, f"Raised by badge {badge.slug!r} for user {user_id!r}.")
                    continue
                self._plan(plan, badge, user_id, level, now)
        if options.dry_run:
            await self._count(report, plan)
        else:
            await self._write(report, plan, now)
        return report, last

    def _plan(
        self, plan: Plan, badge: Badge, user_id: str, level: int | None, now: datetime.datetime
    ) -> None:
        new = None
        if level is not None:
            key = backfill_key(user_id, badge.slug) if badge.multiple else ""
            expires_at = badge.expires_at(now)
            points = badge.points_of(level)
            new = NewAward(
                user_id,
                badge.slug,
                level,
                now,
                key,
                "backfill",
                expires_at=expires_at,
                points=points,
            )
        revoke = self._options.revoke and not badge.multiple
        if badge.settles:
            revoke_above = badge.temporary or revoke
            if new is not None or revoke_above:
                plan.settlements.append(
                    Settlement(
                        user_id,
                        badge.slug,
                        new,
                        now,
                        revoke_above=revoke_above,
                        replace_lower=badge.replaces_lower,
                        backfill=True,
                    )
                )
            return
        if new is not None:
            plan.awards.append(new)
        if revoke and (level or 0) < len(badge.levels):
            plan.revocations.append((user_id, badge.slug, level or 0))

    async def _write(self, report: BackfillReport, plan: Plan, now: datetime.datetime) -> None:
        announce, notify = self._options.announce, self._options.notify
        if plan.revocations:
            for award in await self._flow.revoke_above(plan.revocations, now, announce, notify):
                report.badges[award.slug].revoked += 1
        outcome = await self._flow.record(
            plan.awards, plan.settlements, announce=announce, notify=notify
        )
        if outcome.errors:  # A settlement's write failed: the batch is not done.
            raise outcome.errors[0]
        for award in outcome.recorded:
            report.badges[award.slug].granted += 1
        for action, award in outcome.ended:
            if action != "expired":
                report.badges[award.slug].revoked += 1

    async def _count(self, report: BackfillReport, plan: Plan) -> None:
        """What `_write()` would do, from the awards the users have now."""
        pairs = {(a.user_id, a.slug) for a in plan.awards}
        pairs |= {(user_id, slug) for user_id, slug, _ in plan.revocations}
        pairs |= {(s.user_id, s.slug) for s in plan.settlements}
        now = datetime.datetime.now(datetime.UTC)
        rows: dict[tuple[str, str], list[StoredAward]] = {}
        for row in await self._flow.store.awards_of(sorted(pairs)):
            rows.setdefault((row.award.user_id, row.award.slug), []).append(row)
        for new in plan.awards:
            # A multiple badge's key stays taken by a revoked or expired award; an expired
            # award of a badge held once is replaced.
            taken = any(
                row.award.level == new.level
                and row.award_key == new.award_key
                and (new.award_key != "" or not row.expired(now))
                for row in rows.get((new.user_id, new.slug), ())
            )
            report.badges[new.slug].granted += not taken
        for user_id, slug, level in plan.revocations:
            report.badges[slug].revoked += sum(
                1
                for row in rows.get((user_id, slug), ())
                if row.award.level > level and not row.revoked and not row.expired(now)
            )
        for settlement in plan.settlements:
            held = rows.get((settlement.user_id, settlement.slug), ())
            ended, records, _ = settlement.plan([row.award for row in held if not row.revoked])
            counts = report.badges[settlement.slug]
            counts.granted += records
            counts.revoked += sum(1 for action, _ in ended if action != "expired")


class Ledger:
    """A run's checkpoint: which batches are written, and the position saved."""

    def __init__(self, store: Store, checkpoint: Checkpoint) -> None:
        self._store = store
        self.checkpoint = checkpoint
        self._written: dict[int, tuple[int, str | None]] = {}
        self._next = 0
        self._lock = anyio.Lock()

    async def written(self, index: int, size: int, last: str | None) -> None:
        """Batch `index` of this run, of `size` users ending with `last`, is written: save
        the position once every batch before it is too."""
        self._written[index] = (size, last)
        position, last_user = self.checkpoint.position, self.checkpoint.last_user_id
        while self._next in self._written:
            size, last_user = self._written.pop(self._next)
            position += size
            self._next += 1
        if position == self.checkpoint.position:
            return
        self.checkpoint = dataclasses.replace(
            self.checkpoint, position=position, last_user_id=last_user
        )
        with anyio.CancelScope(shield=True):
            async with self._lock:  # The latest position, whichever task saves it.
                await self._store.save_checkpoint(self.checkpoint)


async def backfill(
    users: Iterable[Any] | AsyncIterable[Any],
    batch: Callable[[Sequence[Any]], Awaitable[BatchResult]],
    store: Store,
    options: Options,
    checkpoint: str | None,
    **run_options: Any,
) -> BackfillReport:
    """Run the batches (`run()`) under the checkpoint named `checkpoint`, if given: resumed
    from where it stopped, saved as batches are written, deleted once the run has ended."""
    ledger = None
    if checkpoint is not None:
        fingerprint = options.fingerprint()
        saved = await store.checkpoint(checkpoint)
        if saved is None:
            saved = Checkpoint(checkpoint, fingerprint, 0, None)
        elif saved.options != fingerprint:
            raise CheckpointError(
                f"The checkpoint {checkpoint!r} was saved by a backfill of other badges or "
                f"options ({saved.options}; this one: {fingerprint}): run it as it was to "
                "resume, or give another checkpoint name."
            )
        ledger = Ledger(store, saved)
    report = BackfillReport(dry_run=options.dry_run)
    report.badges = {badge.slug: BadgeCounts() for badge in options.badges}
    await run(users, batch, report=report, ledger=ledger, **run_options)
    if checkpoint is not None:
        await store.delete_checkpoint(checkpoint)
    return report


async def run(
    users: Iterable[Any] | AsyncIterable[Any],
    batch: Callable[[Sequence[Any]], Awaitable[BatchResult]],
    *,
    batch_size: int,
    concurrency: int,
    report: BackfillReport,
    ledger: Ledger | None,
    identify: Callable[[Any], str],
    progress: Progress | None,
) -> BackfillReport:
    """Read `users` in batches of `batch_size`, skipping those `ledger`'s checkpoint has
    done; run `concurrency` batches at once with `batch`; add each one's report to `report`
    and tell `progress`. Returns `report`, its `seconds` set."""
    started = time.monotonic()
    items = _items(users)
    if ledger is not None and ledger.checkpoint.position:
        report.resumed = ledger.checkpoint.position
        items = _resumed(items, ledger.checkpoint, identify)
    send, receive = anyio.create_memory_object_stream[tuple[int, list[Any]]]()

    async def work(receive: anyio.abc.ObjectReceiveStream[tuple[int, list[Any]]]) -> None:
        async with receive:
            async for index, items in receive:
                result, last = await batch(items)
                if ledger is not None:
                    await ledger.written(index, len(items), last)
                report.add(result)
                report.seconds = time.monotonic() - started
                if progress is not None:
                    await maybe_await(progress(report))

    try:
        async with anyio.create_task_group() as group:
            async with send:
                for _ in range(concurrency):
                    group.start_soon(work, receive.clone())
                receive.close()
                # Broken: every worker has ended, by the error that the task group raises;
                # reading more users would only add this one to it.
                with contextlib.suppress(anyio.BrokenResourceError):
                    index, pending = 0, []
                    async for item in items:
                        pending.append(item)
                        if len(pending) == batch_size:
                            await send.send((index, pending))
                            index, pending = index + 1, []
                    if pending:
                        await send.send((index, pending))
    except ExceptionGroup as group:
        # The first batch that failed stopped the others; batches that failed at the same time
        # met the same fault (a database gone): the first error is raised as it is.
        raise group.exceptions[0] from None
    report.seconds = time.monotonic() - started
    return report


async def _items(users: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(users, AsyncIterable):
        async for user in users:
            yield user
    else:
        for user in users:
            yield user


async def _resumed(
    items: AsyncIterator[Any], checkpoint: Checkpoint, identify: Callable[[Any], str]
) -> AsyncIterator[Any]:
    """`items` without the first `checkpoint.position`, having checked that the last of those
    is the user the checkpoint names."""
    skipped = 0
    async for item in items:
        if skipped < checkpoint.position:
            skipped += 1
            if skipped == checkpoint.position and checkpoint.last_user_id is not None:
                found = identify(item)
                if found != checkpoint.last_user_id:
                    raise CheckpointError(
                        f"The checkpoint {checkpoint.name!r} stopped after user "
                        f"{checkpoint.last_user_id!r}, user {checkpoint.position} of the "
                        f"users, but user {checkpoint.position} is now {found!r}: give the "
                        "same users in the same order to resume, or another checkpoint name "
                        "to start over."
                    )
            continue
        yield item
    if skipped < checkpoint.position:
        raise CheckpointError(
            f"The checkpoint {checkpoint.name!r} has {checkpoint.position} users done, but only "
            f"{skipped} users were given: give the same users in the same order to resume, or "
            "another checkpoint name to start over."
        )
