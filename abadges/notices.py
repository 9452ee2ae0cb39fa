"""Live notices: every change of what a user holds, published to a capped Redis stream after
commit, and read back by `BadgeRegistry.subscribe()`.

The database is the record (the unseen list is a column of the awards table); the stream is a
best-effort feed over it. An entry's fields are `v` (this format's version), `change`
("granted", "revoked", "expired", "replaced"), `user_id` (so that a subscriber of one user
filters without decoding) and `award`, the award as JSON. Publishing never fails an award: an
error or a Redis slower than `ENQUEUE_TIMEOUT` is logged and the notices of that write are
dropped.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from redis.exceptions import RedisError

from ._batching import Batcher
from ._utils import describe, obscure, shorten
from .awards import Action, Award
from .queue import ENQUEUE_TIMEOUT
from .redis_url import redis_client

logger = logging.getLogger("abadges.notices")

#: The version of an entry's fields.
NOTICE_VERSION = "1"
CHANGES: tuple[Action, ...] = ("granted", "revoked", "expired", "replaced")
#: A stream id: milliseconds, and a sequence number (which Redis takes as 0 when left out).
STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")


@dataclasses.dataclass(frozen=True)
class AwardNotice:
    """A change of what a user holds, as `BadgeRegistry.subscribe()` gives it: `id` is its
    stream id (give it as `last_id` to resume after it), `change` is "granted", "revoked",
    "expired" or "replaced", and `award` the award as it was recorded or as it was when it
    stopped being held."""

    id: str
    change: Action
    award: Award


_AWARD_FIELDS = tuple(field.name for field in dataclasses.fields(Award))


def fields_of(change: Action, award: Award) -> dict[str, str]:
    """The stream entry of `change` of `award`."""
    # Not dataclasses.asdict(): it deep-copies each value, which took most of the time.
    data = {name: getattr(award, name) for name in _AWARD_FIELDS}
    for name in ("awarded_at", "expires_at"):
        at = data[name]
        data[name] = None if at is None else at.isoformat()
    return {
        "v": NOTICE_VERSION,
        "change": change,
        "user_id": award.user_id,
        "award": json.dumps(data, separators=(",", ":")),
    }


def notice_of(entry_id: str, fields: Mapping[bytes, bytes]) -> AwardNotice:
    """The notice of a stream entry; `ValueError` (or `KeyError`, `TypeError`) when the entry
    is not an abadges notice of this version."""
    if fields[b"v"].decode() != NOTICE_VERSION:
        raise ValueError(f"version {fields[b'v']!r}")
    change = fields[b"change"].decode()
    if change not in CHANGES:
        raise ValueError(f"change {change!r}")
    data: dict[str, Any] = json.loads(fields[b"award"])
    data["awarded_at"] = datetime.datetime.fromisoformat(data["awarded_at"])
    if data["expires_at"] is not None:
        data["expires_at"] = datetime.datetime.fromisoformat(data["expires_at"])
    return AwardNotice(entry_id, change, Award(**data))


@dataclasses.dataclass(frozen=True)
class _Publication:
    """The changes of one write, and when the call that publishes them stops waiting."""

    changes: Sequence[tuple[Action, Award]]
    deadline: float


class Publisher:
    """Publishes a registry's changes to the stream, best effort (see the module's docstring).

    Its client connects on the first publication, and again after an outage."""

    def __init__(self, redis_url: str, stream: str, maxlen: int) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.maxlen = maxlen
        self._redis = redis_client(
            redis_url, socket_connect_timeout=ENQUEUE_TIMEOUT, socket_timeout=ENQUEUE_TIMEOUT
        )
        self._batches = Batcher[_Publication, None](self._publish_all)

    async def publish(self, changes: Sequence[tuple[Action, Award]]) -> None:
        """Append `changes` to the stream in one round trip, within `ENQUEUE_TIMEOUT`; log an
        error and go on.

        The changes of calls that publish while a round trip is in flight go together in the
        next one (`abadges._batching`), within the timeout of the call that waited longest."""
        if changes:
            await self._batches(_Publication(changes, anyio.current_time() + ENQUEUE_TIMEOUT))

    async def _publish_all(self, publications: list[_Publication]) -> list[None]:
        changes = [change for publication in publications for change in publication.changes]
        deadline = min(publication.deadline for publication in publications)
        try:
            with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for change, award in changes:
                        fields: Any = fields_of(change, award)
                        pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
                    await pipe.execute()
        except (OSError, RedisError) as exc:  # TimeoutError is an OSError.
            change, award = changes[0]
            more = f" and {len(changes) - 1} more" if len(changes) > 1 else ""
            logger.warning(
                "Could not publish the notice of badge %r level %d %s for user %r%s to the "
                "Redis stream %r at %s within %gs (%s); the awards are recorded, and an award "
                "granted is in the user's unseen list.",
                award.slug,
                award.level,
                change,
                award.user_id,
                more,
                self.stream,
                obscure(self.redis_url),
                ENQUEUE_TIMEOUT,
                describe(exc),
            )
        return [None] * len(publications)

    async def close(self) -> None:
        await self._redis.aclose()


def check_last_id(last_id: object) -> str | None:
    """`last_id` as `subscribe()` takes it: None, or a stream id such as "1718000000000-0"."""
    if last_id is None:
        return None
    if not isinstance(last_id, str) or not STREAM_ID.fullmatch(last_id):
        raise ValueError(
            "subscribe() last_id must be None or the id of a notice, such as "
            f"'1718000000000-0'; got {shorten(last_id)}."
        )
    return last_id
