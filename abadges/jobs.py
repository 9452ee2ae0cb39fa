"""Deferred badges as arq jobs: the JSON codec, the job payload, enqueueing, running a job.

An event with deferred badges becomes one job named `abadges.award`, whose single argument
is a JSON object:

    {"v": 1, "key": "<32 hex>", "event": "visited", "user": "42",
     "at": null or "2024-05-01T00:00:00+00:00",
     "badges": {"addict": {...the state freeze() returned, without "user"...}}}

`key` is the arq job id and the award key of the job's `multiple` badges: the unique
constraint of the awards table makes a job that runs twice record its awards once.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import redis.asyncio
from arq.constants import expires_extra_ms, job_key_prefix
from arq.jobs import serialize_job
from redis.exceptions import RedisError

from ._utils import maybe_await
from .base import Badge
from .exceptions import InvalidJobError, InvalidStateError, QueueUnavailableError
from .storage import Award, NewAward
from .users import MAX_USER_ID_LENGTH

if TYPE_CHECKING:
    from .registry import BadgeRegistry

__all__ = [
    "ENQUEUE_TIMEOUT",
    "JOB_NAME",
    "JOB_VERSION",
    "MAX_JOB_BYTES",
    "Job",
    "JobOutcome",
    "JobQueue",
    "dumps",
    "event_award_key",
    "freeze_state",
    "loads",
    "run_job",
]

logger = logging.getLogger("abadges")

JOB_NAME = "abadges.award"
JOB_VERSION = 1
#: Largest serialized job, in bytes: the request refuses bigger state, the worker bigger jobs.
MAX_JOB_BYTES = 1_000_000
#: Deepest nesting of lists and dicts a frozen state may have.
MAX_DEPTH = 32
#: Seconds Redis has to take a job before the request gets `QueueUnavailableError`.
ENQUEUE_TIMEOUT = 1.0
#: Longest `event_key` a call may give.
MAX_EVENT_KEY_LENGTH = 255

JSON_TYPES = "str, int, float, bool, None, and lists and dicts with str keys"


# The codec ------------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """arq's `job_serializer`: JSON, never pickle.

    Job arguments are checked before they get here; the only other things arq hands over are
    job results, which hold the exception of a failed job: those are stored as text.
    """
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_describe).encode()


def loads(data: bytes) -> Any:
    """arq's `job_deserializer`: JSON only; anything else raises `InvalidJobError` unread."""
    if len(data) > MAX_JOB_BYTES:
        raise InvalidJobError(
            f"Job payload is {len(data)} bytes, over the {MAX_JOB_BYTES}-byte limit; "
            "it was not read."
        )
    if data[:1] == b"\x80":
        raise InvalidJobError(
            f"Job payload starts with {data[:2]!r}, a pickle; abadges jobs are JSON and pickle "
            "is never loaded."
        )
    try:
        return json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidJobError(f"Job payload is not JSON ({exc}): {data[:40]!r}.") from None


def _describe(value: object) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# The payload ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """The deferred badges of one event, with the state each `freeze()` captured."""

    key: str
    event: str
    user_id: str
    awarded_at: datetime.datetime | None
    states: dict[str, dict[str, Any]]

    @classmethod
    def create(
        cls,
        event: str,
        user_id: str,
        awarded_at: datetime.datetime | None,
        states: dict[str, dict[str, Any]],
        key: str | None = None,
    ) -> Job:
        """A job with `key` (a new one if None), refusing state too big to queue."""
        job = cls(key or uuid.uuid4().hex, event, user_id, awarded_at, states)
        size = len(dumps(job.to_payload()))
        if size > MAX_JOB_BYTES - 1000:  # Leave room for arq's envelope.
            largest = max(states, key=lambda slug: len(dumps(states[slug])))
            raise InvalidStateError(
                f"The deferred state of event {event!r} is {size} bytes of JSON, over the "
                f"{MAX_JOB_BYTES}-byte limit; the largest is badge {largest!r}'s. "
                "Freeze identifiers, not whole objects."
            )
        return job

    def to_payload(self) -> dict[str, Any]:
        """The JSON object that travels through Redis."""
        return {
            "v": JOB_VERSION,
            "key": self.key,
            "event": self.event,
            "user": self.user_id,
            "at": None if self.awarded_at is None else self.awarded_at.isoformat(),
            "badges": self.states,
        }

    @classmethod
    def from_payload(cls, payload: object) -> Job:
        """Check a payload read from Redis; `InvalidJobError` says what is wrong with it."""
        if not isinstance(payload, dict):
            raise InvalidJobError(f"Job payload must be a JSON object; got {_shorten(payload)}.")
        if payload.get("v") != JOB_VERSION:
            raise InvalidJobError(
                f"Job payload version {_shorten(payload.get('v'))} is not supported; this "
                f"abadges reads version {JOB_VERSION}. Run workers of the same abadges "
                "version as the app."
            )
        fields = {"v", "key", "event", "user", "at", "badges"}
        if set(payload) != fields:
            raise InvalidJobError(
                f"Job payload has fields {sorted(payload)}; expected {sorted(fields)}."
            )
        key, event, user, at, badges = (
            payload["key"],
            payload["event"],
            payload["user"],
            payload["at"],
            payload["badges"],
        )
        if not isinstance(key, str) or not 1 <= len(key) <= 64:
            raise InvalidJobError(f"Job key must be a str of 1 to 64 characters; got {key!r}.")
        if not isinstance(event, str):
            raise InvalidJobError(f"Job event must be a str; got {_shorten(event)}.")
        if not isinstance(user, str) or not 1 <= len(user) <= MAX_USER_ID_LENGTH:
            raise InvalidJobError(
                f"Job user must be a str of 1 to {MAX_USER_ID_LENGTH} characters; "
                f"got {_shorten(user)}."
            )
        if not isinstance(badges, dict) or not all(isinstance(s, dict) for s in badges.values()):
            raise InvalidJobError(
                f"Job badges must map slugs to state objects; got {_shorten(badges)}."
            )
        return cls(key, event, user, _timestamp(at), badges)


def _timestamp(value: object) -> datetime.datetime | None:
    if value is None:
        return None
    try:
        timestamp = datetime.datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        timestamp = None
    if timestamp is None or timestamp.utcoffset() is None:
        raise InvalidJobError(
            f"Job timestamp must be null or an ISO 8601 time with its offset; "
            f"got {_shorten(value)}."
        )
    return timestamp.astimezone(datetime.UTC)


def _shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# The request side -----------------------------------------------------------------------------


def event_award_key(event: str, user_id: str, event_key: object) -> str:
    """The award and job key of an event that the caller named with `event_key`.

    The event and the user are part of it, so that one request id may key several events, or
    the same event for several users, without their awards or jobs colliding.
    """
    if not isinstance(event_key, str) or not 1 <= len(event_key) <= MAX_EVENT_KEY_LENGTH:
        raise InvalidStateError(
            f"event_key must be a str of 1 to {MAX_EVENT_KEY_LENGTH} characters naming this "
            f"occurrence of event {event!r}, such as a request or order id; got "
            f"{_shorten(event_key)}."
        )
    parts = "\0".join((event, user_id, event_key)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(parts).hexdigest()[:32]


async def freeze_state(badge: Badge, state: dict[str, Any]) -> dict[str, Any]:
    """The state a deferred badge's job will carry: what `freeze()` returns, checked to be JSON.

    The user travels as its identity, so the `"user"` key is left out.
    """
    frozen = await maybe_await(badge.freeze(**state))
    if not isinstance(frozen, dict):
        raise InvalidStateError(
            f"Badge {badge.slug!r} freeze() returned {_shorten(frozen)}; expected a dict of state."
        )
    frozen = {key: value for key, value in frozen.items() if key != "user"}
    for key, value in frozen.items():
        problem = _json_problem(value, 0) if isinstance(key, str) else ("", "is not a str")
        if problem is not None:
            where, what = problem
            raise InvalidStateError(
                f"Badge {badge.slug!r} is deferred, and its state key {key!r}"
                f"{f' at {key}{where}' if where else ''} {what}. Deferred state travels "
                f"as JSON: {JSON_TYPES}. Convert it in freeze(), e.g. to an id or an ISO string."
            )
    return frozen


def _json_problem(value: object, depth: int) -> tuple[str, str] | None:
    """Where in `value` JSON cannot carry it faithfully, and why; None if it can."""
    if value is None or isinstance(value, str | bool):
        return None
    if isinstance(value, int):
        # Python refuses to print ints of over 4300 digits, so JSON cannot carry them.
        if value.bit_length() > 14_000:
            return "", f"holds an int of over {14_000 * 3 // 10} digits"
        return None
    if isinstance(value, float):
        return (
            None if math.isfinite(value) else ("", f"holds {value!r}, which JSON has no value for")
        )
    if isinstance(value, list | tuple | dict) and depth >= MAX_DEPTH:
        return "", f"is nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                return f"[{index}]{problem[0]}", problem[1]
        return None
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                return "", f"has the key {_shorten(name)}, which is not a str"
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                return f"[{name!r}]{problem[0]}", problem[1]
        return None
    return "", f"holds {_shorten(value)}, which JSON cannot carry"


class JobQueue:
    """Puts jobs into Redis for `arq abadges.worker.Settings` workers."""

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
        try:
            with anyio.fail_after(ENQUEUE_TIMEOUT):
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.psetex(job_key_prefix + job.key, expires_extra_ms, data)
                    pipe.zadd(self.queue_name, {job.key: now}, nx=True)
                    _, added = await pipe.execute()
        except (OSError, RedisError) as exc:  # TimeoutError is an OSError.
            raise QueueUnavailableError(
                f"Redis at {_obscure(self.redis_url)} did not take the job of event "
                f"{job.event!r} within {ENQUEUE_TIMEOUT:g}s ({type(exc).__name__}: {exc}); "
                f"deferred badges {sorted(job.states)} were not queued."
            ) from exc
        if not added:
            # A call retried with the same event_key while its first job is still queued.
            logger.debug("Job %s of event %r is queued already.", job.key, job.event)

    async def close(self) -> None:
        await self._redis.aclose()


def _obscure(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


# The job --------------------------------------------------------------------------------------


@dataclasses.dataclass
class JobOutcome:
    """What running a job did: the awards it recorded, and the badges that raised."""

    recorded: list[Award]
    failures: list[tuple[str, Exception]]


async def run_job(registry: BadgeRegistry, job: Job) -> JobOutcome:
    """Evaluate the job's badges on their frozen state and record what they award.

    A badge that raises is reported in the outcome and does not stop the others. Loading the
    user and recording the awards may raise: nothing of the job is then recorded, and running
    it again is safe.
    """
    user = await registry._load_user(job.user_id)
    awarded_at = job.awarded_at or datetime.datetime.now(datetime.UTC)
    new_awards: list[NewAward] = []
    failures: list[tuple[str, Exception]] = []
    for slug, state in job.states.items():
        try:
            badge = registry.get_badge(slug)
            level = badge.level_awarded(await maybe_await(badge.award(**state, user=user)))
        except Exception as exc:
            failures.append((slug, exc))
            continue
        if level is not None:
            award_key = job.key if badge.multiple else ""
            new_awards.append(NewAward(job.user_id, slug, level, awarded_at, award_key))
    return JobOutcome(await registry._record(new_awards), failures)
