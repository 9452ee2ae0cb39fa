"""Enqueueing: deferred badges' jobs into Redis, for `arq abadges.worker.WorkerSettings` workers."""

from __future__ import annotations

import logging
import re
import time

import anyio
import redis.asyncio
from arq.constants import expires_extra_ms, job_key_prefix
from arq.jobs import serialize_job
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._utils import obscure
from .exceptions import QueueUnavailableError
from .jobs import JOB_NAME, Job, dumps

logger = logging.getLogger("abadges")

#: Seconds Redis has to take a job before the request gets `QueueUnavailableError`.
ENQUEUE_TIMEOUT = 1.0


class JobQueue:
    """Puts jobs into Redis for the workers."""

    def __init__(self, redis_url: str, queue_name: str) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        # No connection is made here: the first enqueue opens one, and after an outage the
        # next enqueue opens a new one. A refused or silent server fails the enqueue within
        # ENQUEUE_TIMEOUT instead of arq's create_pool() retries, which take seconds.
        self._redis = redis.asyncio.Redis.from_url(
            redis_url, socket_connect_timeout=ENQUEUE_TIMEOUT, socket_timeout=ENQUEUE_TIMEOUT
        )

    async def enqueue(self, job: Job) -> None:
        """Queue `job`; `QueueUnavailableError` if Redis does not take it within a second.

        This writes what arq's `enqueue_job()` writes (the job under its key, its id in the
        queue) in one MULTI/EXEC, without `enqueue_job()`'s WATCH: on a connection lost during
        EXEC, redis-py raises WatchError, which `enqueue_job()` takes for "queued already" and
        returns as if it had queued the job (a job lost without an error, seen when Redis
        restarts under load in tests/faults). Writing a job that is queued already is harmless:
        it is the same job, ZADD NX keeps its place, and a job that runs twice records once.
        """
        now = int(time.time() * 1000)
        data = serialize_job(JOB_NAME, (job.to_payload(),), {}, None, now, serializer=dumps)
        job_id = self.job_id(job)
        try:
            with anyio.fail_after(ENQUEUE_TIMEOUT):
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.psetex(job_key_prefix + job_id, expires_extra_ms, data)
                    pipe.zadd(self.queue_name, {job_id: now}, nx=True)
                    _, added = await pipe.execute()
        except (OSError, RedisError) as exc:  # TimeoutError is an OSError.
            unreachable = isinstance(exc, OSError | RedisConnectionError | RedisTimeoutError)
            what = f"did not take the job of event {job.event!r} within {ENQUEUE_TIMEOUT:g}s"
            if not unreachable:  # Redis answered: out of memory, read-only replica, ...
                what = f"refused the job of event {job.event!r}"
            raise QueueUnavailableError(
                f"Redis at {obscure(self.redis_url)} {what} ({describe(exc)}); "
                f"deferred badges {sorted(job.states)} were not queued."
            ) from exc
        if not added:
            # A call retried with the same event_key while its first job is still queued.
            logger.debug("Job %s of event %r is queued already.", job_id, job.event)

    def job_id(self, job: Job) -> str:
        """The arq job id of `job` in this queue.

        arq's keys of a job (`arq:job:<id>`, `arq:in-progress:<id>`, `arq:retry:<id>`) are
        global to the Redis database, whatever the queue: the queue name in the id keeps two
        apps (or registries) that share a Redis from taking each other's jobs when the same
        event, user and `event_key` give them the same key.
        """
        return f"{self.queue_name}:{job.key}"

    async def close(self) -> None:
        await self._redis.aclose()


#: redis-py prefixes the error of a pipelined command with the command and its arguments: the
#: job's payload, with the user's frozen state.
PIPELINE_ERROR = re.compile(
    r"^Command # \d+ \(.*\) of pipeline caused error: \((['\"])(?P<error>.*)\1,?\)$", re.DOTALL
)


def describe(exc: BaseException) -> str:
    """`Type: message` of a Redis error, without the command text redis-py puts in front of a
    pipelined command's error, and at most 200 characters: never a job's payload."""
    message = str(exc)
    if match := PIPELINE_ERROR.match(message):
        message = match["error"]
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= 200 else f"{text[:197]}..."
