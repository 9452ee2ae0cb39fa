"""The badges of the workloads, for abadges: W1's ten `points_<k>` badges (inline or
deferred) and W2's `always`. A worker imports it as `ABADGES_BADGES=bench_badges` (with
`benchmarks/` on the path) and gets the deferred W1 badges registered on `abadges.badges`."""

from __future__ import annotations

import os
from typing import Any

from workload import BADGES, EVENT, LEVELS, w1_level

from abadges import Badge, BadgeAwarded, badges


def w1_badges(deferred: bool) -> list[type[Badge]]:
    """W1's badges; deferred ones freeze the user's points, inline ones read the user's."""
    classes: list[type[Badge]] = []
    for k in range(BADGES):

        def award(self: Badge, k: int = k, **state: Any) -> BadgeAwarded | None:
            points = state["points"] if deferred else state["user"].points
            level = w1_level(k, points)
            return None if level is None else BadgeAwarded(level=level)

        def freeze(self: Badge, **state: Any) -> dict[str, Any]:
            return {"points": state["user"].points}

        namespace = {"slug": f"points_{k}", "levels": LEVELS, "events": [EVENT], "award": award}
        if deferred:
            namespace.update(deferred=True, freeze=freeze)
        classes.append(type(f"Points{k}Badge", (Badge,), namespace))
    return classes


class AlwaysBadge(Badge):
    """W2: a `multiple` badge that awards on every event."""

    slug = "always"
    levels = ["Always"]
    events = [EVENT]
    multiple = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


if os.environ.get("ABADGES_BADGES") == "bench_badges":  # Imported by a worker.
    for badge_class in w1_badges(deferred=True):
        badges.register(badge_class)
