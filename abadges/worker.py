"""The worker of deferred badges: `arq abadges.worker.WorkerSettings`.

It reads the same `ABADGES_*` settings as the app, imports the modules `ABADGES_BADGES` names
so that their badges are registered, and runs the `abadges.award` jobs the app queues.
`abadges.worker.Settings` is the same settings under the name the first version gave them.

arq reads only a settings class's own attributes, so a subclass of the settings silently
loses them. To customise the worker, build complete settings with `worker_settings()`:

    # myapp/worker.py
    from abadges.worker import worker_settings

    WorkerSettings = worker_settings(max_jobs=50, job_timeout=10)

and run `arq myapp.worker.WorkerSettings`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from arq import Retry, func
from arq.connections import RedisSettings
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import badges
from ._utils import import_module
from .exceptions import BadgeErrorGroup, is_transient
from .jobs import JOB_NAME, dumps, loads
from .registry import BadgeRegistry

__all__ = [
    "BACKOFF_CAP",
    "DATABASE_WAIT",
    "MAX_TRIES",
    "REDIS_RETRIES",
    "Settings",
    "WorkerSettings",
    "worker_settings",
]

logger = logging.getLogger("abadges.worker")

MAX_TRIES = 10
"""How many times a job may start, retries and runs cut short by a killed worker included."""
BACKOFF_CAP = 60
"""Longest wait, in seconds, between two tries of a job that hit a connection error."""
REDIS_RETRIES = 30
"""How many times a Redis command is tried again, at most 2 seconds apart, before the worker
gives up on a Redis that went away: it rides out a restart or an outage of about a minute."""
DATABASE_WAIT = 60
"""Seconds a starting worker waits for an unreachable database before it gives up."""
#: The key of the registry in arq's `ctx`.
REGISTRY = "abadges_registry"

Hook = Callable[[dict[str, Any]], Awaitable[None]]


def worker_settings(registry: BadgeRegistry | None = None, **overrides: Any) -> dict[str, Any]:
    """Complete arq worker settings for abadges' jobs, with `overrides` applied.

    `registry` defaults to `abadges.badges`; its settings (the `ABADGES_*` variables and what
    `configure()` set before this call) give the Redis URL and the queue name. `overrides` are
    arq `Worker` arguments; an `on_startup` you pass runs after abadges has connected, an
    `on_shutdown` before it disconnects.
    """
    owner = badges if registry is None else registry
    settings = owner.settings
    on_startup: Hook | None = overrides.pop("on_startup", None)
    on_shutdown: Hook | None = overrides.pop("on_shutdown", None)

    async def startup(ctx: dict[str, Any]) -> None:
        await start(owner, ctx)
        if on_startup is not None:
            await on_startup(ctx)

    async def shutdown(ctx: dict[str, Any]) -> None:
        try:
            if on_shutdown is not None:
                await on_shutdown(ctx)
        finally:
            await owner.disconnect()

    return {
        "functions": [func(award, name=JOB_NAME)],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings.redis_url),
        # JSON on both sides: nothing read from Redis is unpickled.
        "job_serializer": dumps,
        "job_deserializer": loads,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_tries": MAX_TRIES,
        # arq takes at most max_jobs jobs per poll, then sleeps poll_delay: its defaults (10 and
        # 0.5 s) cap a worker near 20 jobs a second. Polling an idle queue 20 times a second
        # costs Redis next to nothing.
        "poll_delay": 0.05,
        "max_jobs": 50,
        # A job killed with its worker runs again once its in-progress key expires, which is
        # job_timeout + 10 seconds after it started: keep it short. A badge evaluation that
        # needs a minute is a bug to fix, not a reason to delay every re-run.
        "job_timeout": 60,
        # On SIGTERM (a deploy), running jobs get this long to finish before being cancelled
        # and re-queued; finishing records and announces their awards in one go.
        "job_completion_wait": 20,
        # Nobody reads job results; errors are logged. Keeping none saves Redis memory.
        "keep_result": 0,
        **overrides,
    }


def redis_settings(url: str) -> RedisSettings:
    """arq's connection settings for `url`, retrying commands through a Redis restart.

    arq's poll loop ends the worker on the first connection error, so without retries a Redis
    restart would stop every worker, with jobs waiting in the queue.
    """
    settings = RedisSettings.from_dsn(url)
    # OSError too: a refused connection reaches the retry as ConnectionRefusedError.
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    settings.retry = RedisRetry(ExponentialBackoff(cap=2, base=0.1), REDIS_RETRIES)
    return settings


async def start(registry: BadgeRegistry, ctx: dict[str, Any]) -> None:
    """Import the badge modules of the `badges` setting, then connect the registry."""
    for module in registry.settings.badges:
        import_module(module, "ABADGES_BADGES")
    if not registry.registered:
        logger.warning(
            "No badge is registered in this worker: set ABADGES_BADGES to the modules that "
            "register your badges."
        )
    await _connect(registry)
    ctx[REGISTRY] = registry


async def _connect(registry: BadgeRegistry) -> None:
    """Connect, waiting up to DATABASE_WAIT seconds for a database that is down: a worker
    (re)started during an outage, by a deploy or a supervisor, then starts once it is back."""
    deadline = time.monotonic() + DATABASE_WAIT
    delay = 0.1
    while True:
        try:
            await registry.connect()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            logger.warning(
                "The database is unreachable (%s: %s); connecting again in %.1fs.",
                type(exc).__name__,
                exc,
                delay,
            )
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)
        else:
            return


async def award(ctx: dict[str, Any], payload: object) -> int:
    """The `abadges.award` job: evaluate an event's deferred badges and record their awards.

    Returns how many awards it recorded. A payload that is not a valid job raises
    `InvalidJobError`: arq logs it and drops the job. Connection errors are retried with
    backoff; any other error of a badge is logged with the badge and the job, and not retried.
    """
    registry: BadgeRegistry = ctx[REGISTRY]
    job_id, job_try = ctx["job_id"], ctx["job_try"]
    try:
        return len(await registry.run_job(payload))
    except BadgeErrorGroup as group:
        failures = group
    except Exception as exc:
        if is_transient(exc):
            raise _retry(job_id, job_try, exc) from exc
        raise
    retry: Retry | None = None
    for error in failures.exceptions:
        if is_transient(error):
            retry = _retry(job_id, job_try, error)
            continue
        logger.error(
            "Job %s failed and is not retried: %s: %s (%s)",
            job_id,
            type(error).__name__,
            error,
            " ".join(getattr(error, "__notes__", [])),
            exc_info=error,
        )
    if retry is not None:
        # The awards this try recorded stay; the next try records only what is missing.
        raise retry
    return len(failures.recorded)


def _retry(job_id: str, job_try: int, exc: Exception) -> Retry:
    delay = min(2 ** (job_try - 1), BACKOFF_CAP)
    logger.warning(
        "Job %s hit a connection error (try %d): %s: %s%s; retrying in %ds.",
        job_id,
        job_try,
        type(exc).__name__,
        exc,
        "".join(f" ({note})" for note in getattr(exc, "__notes__", [])),
        delay,
    )
    return Retry(defer=delay)


WorkerSettings = worker_settings()
"""The worker, configured by the `ABADGES_*` variables: `arq abadges.worker.WorkerSettings`."""
Settings = WorkerSettings
"""The name the first version gave `WorkerSettings`: `arq abadges.worker.Settings` still works."""
