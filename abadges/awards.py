"""`Award`: an award as recorded, what every query and callback gets."""

from __future__ import annotations

import dataclasses
import datetime


@dataclasses.dataclass(frozen=True)
class Award:
    """A recorded award. `name` and `description` are those of the awarded level, or None when
    the badge or the level is no longer registered."""

    id: int
    user_id: str
    slug: str
    level: int
    name: str | None
    description: str | None
    awarded_at: datetime.datetime
