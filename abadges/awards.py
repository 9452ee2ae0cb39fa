"""`Award`, an award as recorded, what every query and callback gets; `AwardChange`, a row of
the history of what users hold."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Literal

#: Where an award came from: an event's inline badge, a deferred job, a backfill, or a grant by
#: hand.
Source = Literal["event", "deferred", "backfill", "manual"]
#: What a change of the history did.
Action = Literal["granted", "revoked", "expired", "replaced"]


@dataclasses.dataclass(frozen=True)
class Award:
    """A recorded award. `name` and `description` are those of the awarded level, or None when
    the badge or the level is no longer registered. `granted_by` and `reason` are what a grant
    by hand gave (None otherwise); `expires_at` is None for an award that does not expire."""

    id: int
    user_id: str
    slug: str
    level: int
    name: str | None
    description: str | None
    awarded_at: datetime.datetime
    source: Source = "event"
    granted_by: str | None = None
    reason: str | None = None
    expires_at: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class AwardChange:
    """One change of what a user holds, as `history()` gives it: `action` is "granted",
    "revoked", "expired" or "replaced"; `at` when it happened; `source` where the award came
    from; `by` and `reason` who made the change and why, when given."""

    id: int
    action: Action
    user_id: str
    slug: str
    level: int
    at: datetime.datetime
    source: Source
    by: str | None
    reason: str | None
