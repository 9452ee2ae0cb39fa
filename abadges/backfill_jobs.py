"""A backfill's batches as arq jobs (`backfill(deferred=True)`, `abadges backfill --deferred`).

Each batch becomes one job named `abadges.backfill`, whose single argument is a JSON object:

    {"v": 1, "run": "<32 hex>", "batch": 0, "users": ["1", "2", ...],
     "badges": ["helper", ...], "revoke": false, "dry_run": false, "announce": true,
     "notify": false}

(`notify` may be absent, in the jobs of versions before the notices: false.)

The worker runs it as a backfill of those users in the worker's process (`run_batch()`), and
pushes its report, or the error that ended it, to the list `<queue>:abadges.backfill:<run>:<batch>`,
where the run that sent it waits for it. A worker killed mid-batch leaves the job in the
queue: arq runs it again, and its writes record nothing twice. A job that ends without a result
(arq cancelled it at the worker's `job_timeout`, or it ran out of tries) ends the run with a
`BackfillJobError`, as a job that failed does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from arq.constants import job_key_prefix

from ._utils import shorten
from .backfill import BackfillReport, BadgeCounts, BatchResult, Options
from .exceptions import BackfillJobError, InvalidJobError
from .jobs import MAX_JOB_BYTES, dumps, loads
from .redis_url import redis_client
from .users import MAX_USER_ID_LENGTH

if TYPE_CHECKING:
    from .queue import JobQueue
    from .registry import BadgeRegistry

logger = logging.getLogger("abadges")

BACKFILL_JOB = "abadges.backfill"
BACKFILL_VERSION = 1
#: How long a batch's result waits in Redis for the run that sent it, in seconds.
RESULT_TTL = 24 * 3600
#: How often a run waiting for a batch says that it is still waiting, in seconds.
WAITING_NOTICE = 60
#: Seconds of one BLPOP of a waiting run.
POLL = 5


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """A batch of a backfill, as its job gives it."""

    run: str
    batch: int
    users: list[str]
    badges: list[str]
    revoke: bool
    dry_run: bool
    announce: bool
    #: Absent from the payloads of versions before notices: False.
    notify: bool = False

    def to_payload(self) -> dict[str, Any]:
        return {"v": BACKFILL_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_payload(cls, payload: object) -> BatchJob:
        """The batch of a job's payload; `InvalidJobError` naming the field at fault."""
        if not isinstance(payload, dict) or payload.get("v") != BACKFILL_VERSION:
            raise InvalidJobError(
                f"Backfill job payload is not a version-{BACKFILL_VERSION} abadges backfill "
                f"batch: {shorten(payload)}."
            )
        fields = {field.name: field.type for field in dataclasses.fields(cls)}
        missing = sorted(set(fields) - set(payload) - {"notify"})
        if missing:
            raise InvalidJobError(f"Backfill job payload has no {missing}.")
        checks: dict[str, Callable[[object], bool]] = {
            "run": lambda v: isinstance(v, str) and 1 <= len(v) <= 64,
            "batch": lambda v: type(v) is int and v >= 0,
            "users": lambda v: _strings(v, MAX_USER_ID_LENGTH),
            "badges": lambda v: _strings(v, 255) and bool(v),
            "revoke": lambda v: type(v) is bool,
            "dry_run": lambda v: type(v) is bool,
            "announce": lambda v: type(v) is bool,
            "notify": lambda v: type(v) is bool,
        }
        payload = {"notify": False, **payload}
        for name, check in checks.items():
            if not check(payload[name]):
                raise InvalidJobError(
                    f"Backfill job payload field {name!r} is not valid: {shorten(payload[name])}."
                )
        return cls(**{name: payload[name] for name in fields})

    def result_key(self, queue_name: str) -> str:
        """The list the worker pushes this batch's result to."""
        return f"{queue_name}:{BACKFILL_JOB}:{self.run}:{self.batch}"

    def job_id(self, queue_name: str) -> str:
        return f"{queue_name}:{BACKFILL_JOB}:{self.run}:{self.batch}"


def _strings(value: object, longest: int) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, str) and 1 <= len(item) <= longest for item in value
    )


class RemoteBatches:
    """Sends a run's batches to the workers, and waits for their reports: an async context
    manager, for the Redis connection it waits on."""

    def __init__(self, queue: JobQueue, options: Options, identify: Callable[[Any], str]) -> None:
        self._queue = queue
        self._options = options
        self._identify = identify
        self._run = uuid.uuid4().hex
        self._count = 0
        # Its own client: a blocking BLPOP outlasts the queue's one-second timeouts.
        self._redis = redis_client(queue.redis_url, socket_connect_timeout=5)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._redis.aclose()

    async def batch(self, items: Sequence[Any]) -> BatchResult:
        """Send the batch of `items` as one job; return its report when a worker has run it."""
        options = self._options
        report = BackfillReport(dry_run=options.dry_run)
        report.badges = {badge.slug: BadgeCounts() for badge in options.badges}
        users: list[str] = []
        last: str | None = None
        for item in items:
            try:
                last = self._identify(item)
            except Exception as exc:  # Counted here: the worker could not load it either.
                last = None
                report.users += 1
                for counts in report.badges.values():
                    counts.failed += 1
                report.note(exc, f"Raised while loading user {shorten(item)} for a backfill.")
            else:
                users.append(last)
        job = BatchJob(
            self._run,
            self._count,
            users,
            [badge.slug for badge in options.badges],
            options.revoke,
            options.dry_run,
            options.announce,
            options.notify,
        )
        self._count += 1
        payload = job.to_payload()
        size = len(dumps(payload))
        if size > MAX_JOB_BYTES:
            raise ValueError(
                f"A backfill batch of {len(users)} users is a job of {size} bytes, over the "
                f"{MAX_JOB_BYTES}-byte limit of a job: give a smaller batch_size."
            )
        if users:
            queue_name = self._queue.queue_name
            await self._queue.put(BACKFILL_JOB, job.job_id(queue_name), payload)
            result = await self._wait(job.result_key(queue_name), job.job_id(queue_name), job.batch)
            if "error" in result:
                raise BackfillJobError(
                    f"A worker could not run batch {job.batch} of the backfill (users "
                    f"{users[0]!r} to {users[-1]!r}): {result['error']}"
                )
            report.add(BackfillReport.from_dict(result["report"]))
        return report, last

    async def _wait(self, key: str, job_id: str, batch: int) -> dict[str, Any]:
        started = noticed = time.monotonic()
        while True:
            # arq deletes a job once it has ended, after the worker pushed its result: a job
            # gone before this BLPOP has its result in the list, or none is coming (arq
            # cancelled it at its timeout, or it ran out of tries, or was not a valid job).
            ended = not await self._redis.exists(job_key_prefix + job_id)
            timeout = 1 if ended else POLL
            found: list[bytes] | None = await self._redis.blpop([key], timeout=timeout)  # type: ignore[misc]
            if found is not None:
                result: dict[str, Any] = loads(found[1])
                return result
            if ended:
                return {
                    "error": "its job ended without a report: it ran past the worker's "
                    "job_timeout, or out of tries (see the worker's log)."
                }
            if time.monotonic() - noticed >= WAITING_NOTICE:
                noticed = time.monotonic()
                logger.warning(
                    "Batch %d of the backfill has waited %ds for a worker of queue %r: is one "
                    "running?",
                    batch,
                    noticed - started,
                    self._queue.queue_name,
                )


async def run_batch(registry: BadgeRegistry, job: BatchJob) -> dict[str, Any]:
    """The worker's side: run a batch job's backfill; return its report's data."""
    report = await registry.backfill(
        job.users,
        slugs=job.badges,
        revoke=job.revoke,
        dry_run=job.dry_run,
        announce=job.announce,
        notify=job.notify,
        batch_size=max(len(job.users), 1),
        concurrency=1,
    )
    return report.to_dict()


async def push_result(redis: Any, key: str, result: dict[str, Any]) -> None:
    """Push a batch's result (`{"report": ...}` or `{"error": "..."}`) for the run waiting."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, json.dumps(result))
        pipe.expire(key, RESULT_TTL)
        await pipe.execute()
