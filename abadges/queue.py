"""Enqueueing: deferred badges' jobs into Redis, for `arq abadges.worker.WorkerSettings` workers."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._utils import describe, obscure
from .exceptions import ConfigurationError, QueueUnavailableError
from .jobs import JOB_NAME, Job, dumps
from .redis_url import redis_client

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
        self._redis = redis_client(
            redis_url, socket_connect_timeout=ENQUEUE_TIMEOUT, socket_timeout=ENQUEUE_TIMEOUT
        )
        self._policy_checked = False

    async def enqueue(self, job: Job) -> None:
        """Queue `job`; `QueueUnavailableError` if Redis does not take it within a second.

        This writes what arq's `enqueue_job()` writes (the job under its key, its id in the
        queue) in one MULTI/EXEC, without `enqueue_job()`'s WATCH: on a connection lost during
        EXEC, redis-py raises WatchError, which `enqueue_job()` takes for "queued already" and
        returns as if it had queued the job (a job lost without an error, seen when Redis
        restarts under load in tests/faults). Writing a job that is queued already is harmless:
        it is the same job, ZADD NX keeps its place, and a job that runs twice records once.
        """
        job_id = self.job_id(job)
        try:
            added = await self.put(JOB_NAME, job_id, job.to_payload())
        except (OSError, RedisError) as exc:  # TimeoutError is an OSError.
            unreachable = isinstance(exc, OSError | RedisConnectionError | RedisTimeoutError)
            what = f"did not take the job of event {job.event!r} within {ENQUEUE_TIMEOUT:g}s"
            if not unreachable:  # Redis answered: out of memory, read-only replica, ...
                what = f"refused the job of event {job.event!r}"
            raise QueueUnavailableError(
                f"Redis at {obscure(self.redis_url)} {what} ({describe(exc)}); "
                f"deferred badges {sorted(job.states)} were not queued."
            ) from exc
        if not self._policy_checked:
            self._policy_checked = True
            await self._warn_if_evicting()
        if not added:
            # A call retried with the same event_key while its first job is still queued.
            logger.debug("Job %s of event %r is queued already.", job_id, job.event)

    async def put(self, function: str, job_id: str, payload: dict[str, Any]) -> bool:
        """Write the job of arq function `function` with id `job_id` and its one argument
        `payload`, within `ENQUEUE_TIMEOUT`; return whether it was new. Redis's errors are
        raised as they are."""
        now = int(time.time() * 1000)
        data = serialize_job(function, (payload,), {}, None, now, serializer=dumps)
        with anyio.fail_after(ENQUEUE_TIMEOUT):
            async with self._redis.pipeline(transaction=True) as pipe:
                # No expiry: arq deletes a job's data when it finishes, and data with a TTL is
                # what a `volatile-*` Redis evicts first. A job waits for a worker however
                # long none runs.
                pipe.set(job_key_prefix + job_id, data)
                pipe.zadd(self.queue_name, {job_id: now}, nx=True)
                _, added = await pipe.execute()
        return bool(added)

    async def _warn_if_evicting(self) -> None:
        """Warn, once, when this Redis may evict queued jobs (the worker refuses to start)."""
        try:
            warning = await check_no_eviction(self._redis, self.redis_url)
        except ConfigurationError as exc:
            warning = str(exc)
        if warning is not None:
            logger.warning("%s", warning)

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


async def check_no_eviction(client: Any, redis_url: str) -> str | None:
    """Raise `ConfigurationError` when the Redis at `redis_url` may evict queued jobs (its
    `maxmemory-policy` is not `noeviction`). Return a warning to log when it refuses CONFIG
    (some managed services), so that the policy cannot be read; None when all is well."""
    try:
        policy = (await client.config_get("maxmemory-policy")).get("maxmemory-policy")
    except RedisError as exc:
        return (
            f"Could not read the maxmemory-policy of Redis at {obscure(redis_url)} "
            f"({describe(exc)}): make sure it is noeviction, or queued jobs may be evicted "
            "and their awards lost without a word."
        )
    policy = policy.decode() if isinstance(policy, bytes) else policy
    if policy != "noeviction":
        raise ConfigurationError(
            f"Redis at {obscure(redis_url)} has maxmemory-policy {policy!r}: when it fills up "
            "it evicts keys, queued jobs among them, and their awards are lost without a word. "
            "Set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in "
            "redis.conf), or give abadges a Redis of its own that does not evict."
        )
    return None
