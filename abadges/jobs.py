"""The job wire format: deferred badges as arq jobs, the JSON codec, the payload and its checks.

An event with deferred badges becomes one job named `abadges.award`, whose single argument
is a JSON object:

    {"v": 1, "key": "<32 hex>", "event": "visited", "user": "42",
     "at": null or "2024-05-01T00:00:00+00:00",
     "badges": {"addict": {...the state freeze() returned, without "user"...}}}

`key` is the arq job id and the award key of the job's `multiple` badges: the unique
constraint of the awards table makes a job that runs twice record its awards once.

Putting jobs into Redis is `queue.py`'s; running them is the award flow's (`awarding.py`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import uuid
from typing import Any

from ._utils import shorten
from .exceptions import InvalidJobError, InvalidStateError
from .users import MAX_USER_ID_LENGTH

JOB_NAME = "abadges.award"
#: The periodic job that moves expired awards to the history; arq's name of it is
#: "<queue name>:abadges.expire" (see `abadges.worker`).
EXPIRY_JOB = "abadges.expire"
JOB_VERSION = 1
#: Largest serialized job, in bytes: the request refuses bigger state, the worker bigger jobs.
MAX_JOB_BYTES = 1_000_000
#: Deepest nesting of lists and dicts a frozen state may have.
MAX_DEPTH = 32

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
                f"{MAX_JOB_BYTES}-byte limit; the largest is the state of badge {largest!r}. "
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
            raise InvalidJobError(f"Job payload must be a JSON object; got {shorten(payload)}.")
        if payload.get("v") != JOB_VERSION:
            raise InvalidJobError(
                f"Job payload version {shorten(payload.get('v'))} is not supported; this "
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
            raise InvalidJobError(f"Job event must be a str; got {shorten(event)}.")
        if not isinstance(user, str) or not 1 <= len(user) <= MAX_USER_ID_LENGTH:
            raise InvalidJobError(
                f"Job user must be a str of 1 to {MAX_USER_ID_LENGTH} characters; "
                f"got {shorten(user)}."
            )
        if not isinstance(badges, dict) or not all(isinstance(s, dict) for s in badges.values()):
            raise InvalidJobError(
                f"Job badges must map slugs to state objects; got {shorten(badges)}."
            )
        return cls(key, event, user, _timestamp(at), badges)


def _timestamp(value: object) -> datetime.datetime | None:
    if value is None:
        return None
    try:
        timestamp = datetime.datetime.fromisoformat(value)  # type: ignore[arg-type]
        if timestamp.utcoffset() is not None:
            return timestamp.astimezone(datetime.UTC)
    except (TypeError, ValueError, OverflowError):  # OverflowError: past year 9999 in UTC.
        pass
    raise InvalidJobError(
        "Job timestamp must be null or an ISO 8601 time with its offset, within the years 1 to "
        f"9999 in UTC; got {shorten(value)}."
    )


# The state a deferred badge freezes ---------------------------------------------------------


def check_frozen_state(slug: str, frozen: object) -> dict[str, Any]:
    """The state a deferred badge's `freeze()` returned, as its job will carry it.

    The user travels as its identity, so the `"user"` key is left out. Raises
    `InvalidStateError` naming the badge and the key when JSON cannot carry a value faithfully.
    """
    if not isinstance(frozen, dict):
        raise InvalidStateError(
            f"Badge {slug!r} freeze() returned {shorten(frozen)}; expected a dict of state."
        )
    frozen = {key: value for key, value in frozen.items() if key != "user"}
    for key, value in frozen.items():
        problem = _json_problem(value, 0) if isinstance(key, str) else ("", "is not a str")
        if problem is not None:
            where, what = problem
            raise InvalidStateError(
                f"Badge {slug!r} is deferred, and its state key {key!r}"
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
                return "", f"has the key {shorten(name)}, which is not a str"
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                return f"[{name!r}]{problem[0]}", problem[1]
        return None
    return "", f"holds {shorten(value)}, which JSON cannot carry"
