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

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from arq import Retry, cron, func
from arq.connections import RedisSettings
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import badges
from ._full_redis import HEALTH_PREFIX, adopt
from ._utils import import_module, obscure
from .backfill import error_text
from .backfill_jobs import BACKFILL_JOB, BatchJob, push_result, run_batch
from .config import Settings as AbadgesSettings
from .exceptions import BadgeErrorGroup, BadgeNotRegisteredError, ConfigurationError, is_transient
from .jobs import EXPIRY_JOB, JOB_NAME, dumps, loads
from .queue import check_no_eviction
from .redis_url import arq_settings, redis_client
from .registry import BadgeRegistry

__all__ = [
    "BACKOFF_CAP",
    "DATABASE_WAIT",
    "HEALTH_INTERVAL",
    "MAX_TRIES",
    "REDIS_RETRIES",
    "Settings",
    "WorkerSettings",
    "health_key",
    "live_workers",
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
HEALTH_INTERVAL = 5
"""Seconds between two refreshes of a worker's health key (see `live_workers()`). The key lives
three intervals unless refreshed: a worker that died, or whose event loop has been stuck that
long (15 s by default), is no longer live."""
LOGGED = 10
"""At most how many failed badges of one job the worker logs one by one."""
#: The keys of the registry and of the heartbeat task in arq's `ctx`.
REGISTRY = "abadges_registry"
HEARTBEAT = "abadges_heartbeat"

Hook = Callable[[dict[str, Any]], Awaitable[None]]


def worker_settings(registry: BadgeRegistry | None = None, **overrides: Any) -> dict[str, Any]:
    """Complete arq worker settings for abadges' jobs, with `overrides` applied.

    `registry` defaults to `abadges.badges`; its settings (the `ABADGES_*` variables and what
    `configure()` set before this call) give the Redis URL and the queue name. `overrides` are
    arq `Worker` arguments; an `on_startup` you pass runs after abadges has connected, an
    `on_shutdown` before it disconnects. `health_interval` (seconds, default
    `HEALTH_INTERVAL`) is how often the worker refreshes its health key, which lives three
    times as long (see `live_workers()`).
    """
    owner = badges if registry is None else registry
    settings = owner.settings
    on_startup: Hook | None = overrides.pop("on_startup", None)
    on_shutdown: Hook | None = overrides.pop("on_shutdown", None)
    # A burst worker (tests, scripts) ends with its queue: it has no liveness to report, and
    # runs no periodic job (`abadges expire` does it where no worker keeps running).
    interval: float | None = overrides.pop("health_interval", HEALTH_INTERVAL)
    periodic = [
        # arq enqueues a cron job once per minute whatever the number of workers (its id is
        # the minute's); the queue name in its name keeps the queues that share a Redis
        # apart, as it does for job ids (JobQueue.job_id()). Two runs at once would still
        # move each award once (Store.expire()).
        cron(expire, name=f"{settings.queue_name}:{EXPIRY_JOB}", second=0, run_at_startup=True)
    ]
    if overrides.get("burst"):
        interval, periodic = None, []

    async def startup(ctx: dict[str, Any]) -> None:
        await start(owner, ctx, interval)
        if on_startup is not None:
            await on_startup(ctx)

    async def shutdown(ctx: dict[str, Any]) -> None:
        try:
            if on_shutdown is not None:
                await on_shutdown(ctx)
        finally:
            await stop(owner, ctx)

    return {
        "functions": [
            func(award, name=JOB_NAME),
            # No timeout of its own: arq keeps the in-progress key of every job for the
            # largest timeout of its functions + 10 s, so a longer one here would delay the
            # re-run of every job a killed worker held, award jobs included. A backfill batch
            # is to finish within job_timeout (give a smaller batch_size).
            func(backfill, name=BACKFILL_JOB),
        ],
        "cron_jobs": periodic,
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
        # arq's own health key is one per queue, deleted when any worker of the queue stops,
        # so `arq --check` fails for the workers still running; abadges keeps one per worker
        # process (live_workers()). A short interval makes arq's key, which a killed worker
        # leaves behind, expire within a minute instead of an hour.
        "health_check_interval": 60,
        **overrides,
    }


def redis_settings(url: str) -> RedisSettings:
    """arq's connection settings for `url`, retrying commands through a Redis restart.

    The URL is read as the app reads it (`abadges.redis_url`), not by arq's `from_dsn()`, which
    neither decodes a percent-encoded password nor reads the query's options. arq's poll loop
    ends the worker on the first connection error, so without retries a Redis restart would
    stop every worker, with jobs waiting in the queue.
    """
    settings = arq_settings(url)
    # OSError too: a refused connection reaches the retry as ConnectionRefusedError.
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    settings.retry = RedisRetry(ExponentialBackoff(cap=2, base=0.1), REDIS_RETRIES)
    return settings


async def start(registry: BadgeRegistry, ctx: dict[str, Any], interval: float | None) -> None:
    """Import the badge modules of the `badges` setting, refuse to run without badges or
    without a database, connect the registry, log what the worker runs on, and start its
    heartbeat every `interval` seconds (None: no heartbeat)."""
    settings = registry.settings
    for module in settings.badges:
        import_module(module, "ABADGES_BADGES")
    deferred = [slug for slug, badge in registry.registered.items() if badge.deferred]
    expiring = [s for s, badge in registry.registered.items() if badge.expires_after is not None]
    # Any badge will do: a site with neither deferred nor expiring badges still sends the
    # batches of `abadges backfill --deferred` to its workers.
    if not registry.registered:
        where = (
            f"the modules ABADGES_BADGES names ({', '.join(settings.badges)}) register none"
            if settings.badges
            else "ABADGES_BADGES is not set"
        )
        raise ConfigurationError(
            f"The worker has no badge to run: {where}. "
            "Set ABADGES_BADGES to the comma-separated modules that register your badges, as "
            "the app imports them."
        )
    _check_database(settings)
    if "redis" in ctx:
        adopt(ctx["redis"], settings.redis_url)
        warning = await check_no_eviction(ctx["redis"], settings.redis_url)
        if warning is not None:
            logger.warning("%s", warning)
    await _connect(registry)
    logger.info(
        "abadges worker %s on %s: database %s, Redis %s, queue %r, badge modules %s, "
        "deferred badges %s, expiring badges %s.",
        os.getpid(),
        socket.gethostname(),
        obscure(settings.database_url),
        obscure(settings.redis_url),
        settings.queue_name,
        list(settings.badges),
        deferred,
        expiring,
    )
    ctx[REGISTRY] = registry
    if interval is not None:
        # arq's start-up and shut-down hooks are separate calls, with no scope around the
        # worker's life that an anyio task group could live in: the heartbeat is an asyncio task.
        beat = _beat(ctx["redis"], settings.queue_name, interval)
        ctx[HEARTBEAT] = asyncio.create_task(beat)


async def stop(registry: BadgeRegistry, ctx: dict[str, Any]) -> None:
    """Stop the heartbeat and delete the worker's health key, then disconnect."""
    heartbeat: asyncio.Task[None] | None = ctx.pop(HEARTBEAT, None)
    try:
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await ctx["redis"].delete(health_key(registry.settings.queue_name))
    finally:
        await registry.disconnect()


def _check_database(settings: AbadgesSettings) -> None:
    """Refuse the default SQLite file when it does not exist: a worker started without
    ABADGES_DATABASE_URL would otherwise create an empty database of its own and record
    awards nobody reads."""
    default = AbadgesSettings.database_url
    path = pathlib.Path(default.partition(":///")[2])
    if settings.database_url == default and not path.exists():
        raise ConfigurationError(
            f"The worker's database is the default {default}, and {path.resolve()} does not "
            "exist: set ABADGES_DATABASE_URL to the database the app records awards in."
        )


def health_key(queue_name: str, host: str | None = None, pid: int | None = None) -> str:
    """The Redis key that the worker process `pid` on `host` (default: this process) keeps
    alive while it runs the queue `queue_name`."""
    host = socket.gethostname() if host is None else host
    return f"{HEALTH_PREFIX}{queue_name}:{host}:{os.getpid() if pid is None else pid}"


async def _beat(redis: Any, queue_name: str, interval: float) -> None:
    key = health_key(queue_name)
    started = time.time()
    beat = {"pid": os.getpid(), "host": socket.gethostname(), "queue": queue_name}
    while True:
        try:
            value = json.dumps({**beat, "started": started, "at": time.time()})
            await redis.set(key, value, px=int(interval * 3 * 1000))
        except Exception as exc:  # The worker goes on; its health key lapses, as it should.
            logger.warning(
                "Could not refresh the health key %s: %s: %s", key, type(exc).__name__, exc
            )
        await asyncio.sleep(interval)


async def live_workers(
    redis_url: str,
    queue_name: str,
    host: str | None = None,
    pid: int | None = None,
    *,
    anywhere: bool = False,
) -> list[dict[str, Any]]:
    """The worker processes of `queue_name` whose health key is fresh, on `host` (default: this
    host; with `anywhere`, every host) and with process id `pid` (default: any): each as the
    JSON its heartbeat wrote (`pid`, `host`, `queue`, `started` and `at`, Unix times).
    `abadges worker check` is this.
    """
    client = redis_client(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        if pid is not None:
            keys = [health_key(queue_name, host, pid)]
        elif anywhere:
            pattern = _glob_escape(f"{HEALTH_PREFIX}{queue_name}:") + "*"
            keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        else:
            pattern = _glob_escape(health_key(queue_name, host, 0)[:-1]) + "*"
            keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        values = await client.mget(keys) if keys else []
    finally:
        await client.aclose()
    found = (json.loads(value) for value in values if value is not None)
    # A queue named "q:x" has keys under "q:" too: keep those of this queue.
    return sorted((w for w in found if w["queue"] == queue_name), key=lambda w: w["pid"])


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


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
    `InvalidJobError`: arq logs it and drops the job. Connection errors, and faults of the
    deployment (a `ConfigurationError` such as `SchemaError`), are retried with backoff; any
    other error of a badge is logged with the badge and the job, and not retried.
    """
    registry: BadgeRegistry = ctx[REGISTRY]
    job_id, job_try = ctx["job_id"], ctx["job_try"]
    try:
        return len(await registry.run_job(payload))
    except BadgeErrorGroup as group:
        failures = group
    except Exception as exc:
        if is_transient(exc):
            raise _retry(job_id, job_try, exc, "hit a connection error") from exc
        if isinstance(exc, ConfigurationError):
            # A fault of the deployment that the message names (a database not migrated yet,
            # PgBouncer without ?statement_cache_size=0): the job waits for its fix, as it
            # waits for an updated worker on deploy skew, instead of being dropped.
            why = "met a fault of the deployment (fix what the error says)"
            raise _retry(job_id, job_try, exc, why) from exc
        raise
    # Each kind of failure is logged for at most LOGGED badges: a poison job naming thousands
    # of badges makes a few log lines, not thousands of tracebacks.
    skew: list[Exception] = []
    transient: list[Exception] = []
    final: list[Exception] = []
    for error in failures.exceptions:  # One pass: a poison job may hold thousands.
        if isinstance(error, BadgeNotRegisteredError):
            skew.append(error)
        elif is_transient(error):
            transient.append(error)
        else:
            final.append(error)
    for error in final[:LOGGED]:
        logger.error(
            "Job %s failed and is not retried: %s: %s (%s)",
            job_id,
            type(error).__name__,
            error,
            " ".join(getattr(error, "__notes__", [])),
            exc_info=error,
        )
    if len(final) > LOGGED:
        logger.error(
            "Job %s: %d more badges failed and are not retried.", job_id, len(final) - LOGGED
        )
    if transient:
        # The awards this try recorded stay; the next try records only what is missing.
        raise _retry(job_id, job_try, transient, "hit a connection error")
    if skew:
        # Deploy skew: the app runs a newer version whose badge this worker lacks. Waiting lets
        # an updated worker take the job; the backoff bounds the wait (about 4 min).
        why = "names a badge this worker does not register (deploy skew: update the workers)"
        raise _retry(job_id, job_try, skew, why)
    return len(failures.recorded)


async def backfill(ctx: dict[str, Any], payload: object) -> int:
    """The `abadges.backfill` job: a batch of a deferred backfill (`abadges.backfill_jobs`).

    Runs the batch's backfill here and pushes its report for the run waiting, then returns how
    many awards it granted. Connection errors, faults of the deployment and badges this worker
    does not register are retried with backoff, as `award` retries them; on the last try, or on
    any other error, the error is pushed instead, and the run that waits raises it."""
    registry: BadgeRegistry = ctx[REGISTRY]
    job_id, job_try = ctx["job_id"], ctx["job_try"]
    job = BatchJob.from_payload(payload)  # An invalid job is dropped: no run can wait for it.
    key = job.result_key(registry.settings.queue_name)
    try:
        report = await run_batch(registry, job)
    except Exception as exc:
        retried = is_transient(exc) or isinstance(exc, ConfigurationError | BadgeNotRegisteredError)
        if retried and job_try < MAX_TRIES:
            raise _retry(job_id, job_try, exc, "could not run its backfill batch") from exc
        await push_result(ctx["redis"], key, {"error": error_text(exc)})
        raise
    await push_result(ctx["redis"], key, {"report": report})
    granted: int = report["granted"]
    return granted


async def expire(ctx: dict[str, Any]) -> int:
    """The periodic job: move the expired awards to the history (`expire_awards()`), and
    return how many. An error is logged by arq, and the next minute's run tries again."""
    registry: BadgeRegistry = ctx[REGISTRY]
    moved = await registry.expire_awards()
    if moved:
        logger.info("Moved %d expired award(s) to the history.", moved)
    return moved


def _retry(job_id: str, job_try: int, errors: Exception | list[Exception], why: str) -> Retry:
    errors = errors if isinstance(errors, list) else [errors]
    exc = errors[0]
    delay = min(2 ** (job_try - 1), BACKOFF_CAP)
    logger.warning(
        "Job %s %s (try %d): %s: %s%s%s; retrying in %ds.",
        job_id,
        why,
        job_try,
        type(exc).__name__,
        exc,
        "".join(f" ({note})" for note in getattr(exc, "__notes__", [])),
        f", and {len(errors) - 1} more" if len(errors) > 1 else "",
        delay,
    )
    return Retry(defer=delay)


WorkerSettings = worker_settings()
"""The worker, configured by the `ABADGES_*` variables: `arq abadges.worker.WorkerSettings`."""
Settings = WorkerSettings
"""The name the first version gave `WorkerSettings`: `arq abadges.worker.Settings` still works."""
