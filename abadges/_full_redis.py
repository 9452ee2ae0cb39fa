"""The worker's Redis connection when Redis is full: it goes on draining the queue.

With `maxmemory` reached and `noeviction`, Redis refuses every write that may
take memory, and every command queued in MULTI, even GET and DEL. arq does all of a job's
bookkeeping in MULTI/EXEC (claim, start, finish), so on a full Redis it could neither take nor
finish a job: it took the refused claim for "started elsewhere" and skipped the job, and its
health key's refused SET ended the worker. Nothing drained the queue, which alone frees memory.

The worker's connection (arq's pool, adopted at start: arq builds it, and its Worker class
cannot be chosen from settings) therefore runs a transaction or command that Redis refused for
memory again, as one Lua script flagged `allow-oom` (Redis 7), atomic as MULTI/EXEC was, when
it is the worker's bookkeeping: reads, deletions, and writes of a few bytes to a job's claim,
try count and place in the queue, or to a health key. A job then costs a few dozen bytes past
maxmemory while it runs and frees its data when it ends. Anything else (a result, a job that
a job function queues through ctx["redis"]) is refused as before; the periodic expiry job,
which arq queues in its poll loop, is skipped until Redis has room.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from arq.connections import ArqRedis
from arq.constants import health_check_key_suffix, in_progress_key_prefix, retry_key_prefix
from arq.jobs import Job
from redis.asyncio.client import Pipeline
from redis.exceptions import ExecAbortError, OutOfMemoryError, ResponseError, WatchError

from ._utils import describe, obscure
from .jobs import EXPIRY_JOB

logger = logging.getLogger("abadges.worker")  # The worker logs it.

FULL_WARNING_INTERVAL = 60
"""At least how many seconds apart the worker warns that Redis is out of memory."""
HEALTH_PREFIX = "abadges:worker:"
"""What every worker's health key starts with (`abadges.worker.health_key()`)."""

#: Commands that read or free memory.
_FREEING = frozenset(
    "GET EXISTS ZSCORE ZRANGE DEL UNLINK ZREM ZREMRANGEBYSCORE EXPIRE PEXPIRE".split()
)
#: Commands that write a few bytes, when their key is one of the worker's bookkeeping.
_SMALL_WRITES = frozenset("SET PSETEX SETEX INCRBY ZINCRBY".split())
#: KEYS: the claims (in-progress keys) the transaction WATCHed, absent when watched (arq only
#: claims a job nobody runs); one that exists now fails the transaction, as EXEC would. ARGV: the
#: commands, each as its number of arguments, then the arguments.
_PAST_MAXMEMORY = """#!lua flags=allow-oom
for _, key in ipairs(KEYS) do
    if redis.call('exists', key) == 1 then return false end
end
local replies, at = {}, 1
while at <= #ARGV do
    local n = tonumber(ARGV[at])
    replies[#replies + 1] = redis.call(unpack(ARGV, at + 1, at + n))
    at = at + n + 1
end
return replies
"""
#: Options of redis-py's commands that are not arguments of their response callbacks.
_NOT_CALLBACK_OPTIONS = frozenset({"keys", "EMPTY_RESPONSE", "NEVER_DECODE"})

Command = tuple[tuple[Any, ...], Mapping[str, Any]]


class WorkerRedis(ArqRedis):
    """arq's connection of a running worker, made this class by `adopt()`."""

    _abadges_url: str
    _abadges_full: bool
    #: Whether the last "out of memory" warning awaits its "room again"; no new warning before.
    _abadges_told: bool
    _abadges_quiet_until: float
    _abadges_refused: bool

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> WorkerPipeline:
        return WorkerPipeline(self, transaction, shard_hint)

    async def enqueue_job(self, function: str, *args: Any, **kwargs: Any) -> Job | None:
        try:
            return await super().enqueue_job(function, *args, **kwargs)
        except OutOfMemoryError:
            # arq enqueues its cron jobs in its poll loop, which an error would end: the
            # periodic expiry waits for the next minute instead. It only writes the history
            # of awards that are already not held.
            if not function.endswith(f":{EXPIRY_JOB}"):
                raise
            logger.warning(
                "Redis at %s is full: the periodic job %s waits for the next minute.",
                obscure(self._abadges_url),
                function,
            )
            return None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except OutOfMemoryError as exc:
            [reply] = await _past_maxmemory(self, [], [(args, options)], exc)
            return reply


class WorkerPipeline(Pipeline):
    def __init__(self, client: WorkerRedis, transaction: bool, shard_hint: str | None) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, transaction, shard_hint)
        self._client = client
        self._watched: list[Any] = []

    # redis-py's typing declares the synchronous client's watch(); the asyncio one is a coroutine.
    async def watch(self, *names: Any) -> Any:  # type: ignore[override]
        self._watched.extend(names)
        return await super().watch(*names)

    async def reset(self) -> None:
        self._watched = []
        await super().reset()  # type: ignore[no-untyped-call]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        # execute() resets the pipeline, the commands and the transaction flag included.
        commands, watched = list(self.command_stack), self._watched
        transaction = self.is_transaction or self.explicit_transaction
        try:
            replies: list[Any] = await super().execute(raise_on_error)
        except (OutOfMemoryError, ExecAbortError) as exc:
            error = out_of_memory(exc)
            # Not for memory; or not a transaction, whose other commands ran: they must not run
            # twice.
            if error is None or not transaction:
                raise
            return await _past_maxmemory(self._client, watched, commands, error)
        client = self._client
        if transaction and client._abadges_full:
            # Redis refuses any MULTI while it is full: it has room again.
            client._abadges_full = False
            if client._abadges_told:
                client._abadges_told = False
                logger.warning(
                    "Redis at %s has room again: the worker's writes are within maxmemory.",
                    obscure(client._abadges_url),
                )
        return replies


def adopt(pool: Any, redis_url: str) -> None:
    """Make arq's connection of this worker a `WorkerRedis`, which drains a full Redis."""
    if type(pool) is not ArqRedis:  # A pool of the caller's own class: leave it as it is.
        return
    pool.__class__ = WorkerRedis
    adopted = cast(WorkerRedis, pool)
    adopted._abadges_url = redis_url
    adopted._abadges_full = adopted._abadges_told = adopted._abadges_refused = False
    adopted._abadges_quiet_until = 0.0


def is_bookkeeping(args: tuple[Any, ...], queue_name: str) -> bool:
    """Whether a command is worker bookkeeping that may go past maxmemory (see above)."""
    name = _text(args[0]).upper()
    if name in _FREEING:
        return True
    if name not in _SMALL_WRITES or len(args) < 2:
        return False
    key = _text(args[1])
    if name == "ZINCRBY":  # A retried job's new time.
        return key == queue_name
    return key.startswith((in_progress_key_prefix, retry_key_prefix, HEALTH_PREFIX)) or (
        key == queue_name + health_check_key_suffix
    )


def out_of_memory(exc: OutOfMemoryError | ExecAbortError) -> OutOfMemoryError | None:
    """`exc` as an `OutOfMemoryError` when Redis refused for memory, else None.

    Redis 7 also checks memory at EXEC: a transaction whose commands were queued while it had
    room is refused as a whole, "EXECABORT Transaction discarded because of: OOM command not
    allowed ...", which redis-py raises as `ExecAbortError`."""
    if isinstance(exc, OutOfMemoryError):
        return exc
    if "OOM command not allowed" not in str(exc):
        return None
    error = OutOfMemoryError(str(exc))
    error.__cause__ = exc
    return error


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _past_maxmemory(
    client: WorkerRedis, watched: list[Any], commands: list[Command], error: OutOfMemoryError
) -> list[Any]:
    """Run `commands`, which a full Redis refused with `error`, as one script allowed past
    maxmemory if they are the worker's bookkeeping; raise `error` if not."""
    queue = client.default_queue_name
    claims = all(_text(key).startswith(in_progress_key_prefix) for key in watched)
    if not claims or not all(is_bookkeeping(args, queue) for args, _ in commands):
        raise error
    client._abadges_full = True
    # At the brim Redis is full and has room in turns, as connections' buffers come and go and
    # the app queues what the worker frees: a warning a minute at most.
    if time.monotonic() >= client._abadges_quiet_until:
        client._abadges_quiet_until = time.monotonic() + FULL_WARNING_INTERVAL
        client._abadges_told = True
        logger.warning(
            "Redis at %s is out of memory (maxmemory reached, noeviction): it refuses new jobs. "
            "The worker goes on draining the queue, which frees memory; its bookkeeping (claims, "
            "try counts, health keys: a few dozen bytes a running job) goes past maxmemory.",
            obscure(client._abadges_url),
        )
    argv: list[Any] = []
    for args, _ in commands:
        argv += [len(args), *args]
    try:
        replies = await ArqRedis.execute_command(  # type: ignore[no-untyped-call]
            client, "EVAL", _PAST_MAXMEMORY, len(watched), *watched, *argv
        )
    except ResponseError as exc:
        if not client._abadges_refused:
            client._abadges_refused = True
            logger.warning(
                "Redis at %s refused the worker's script past maxmemory (%s): the worker cannot "
                "drain a full Redis, which needs Redis 7 and EVAL. Jobs stay queued until memory "
                "is freed.",
                obscure(client._abadges_url),
                describe(exc),
            )
        raise error from exc
    if replies is None:
        raise WatchError("A claim the transaction watched was made meanwhile.")
    return [
        _parse(client, command, reply) for command, reply in zip(commands, replies, strict=True)
    ]


def _parse(client: WorkerRedis, command: Command, reply: Any) -> Any:
    """`reply` as redis-py returns it for `command`."""
    args, options = command
    callback = client.response_callbacks.get(args[0])
    if callback is None:
        return reply
    return callback(reply, **{k: v for k, v in options.items() if k not in _NOT_CALLBACK_OPTIONS})
