"""The seeded workloads of issue 5, shared by every benchmark (stdlib only: the pinax-badges
side imports it from its own virtualenv).

`rng = random.Random(42)`; 1,000 users start with `rng.randint(0, 12000)` points each; then
10,000 events `(user, points)` with `rng.randrange(1000)` and `rng.randint(0, 100)`. Each event
adds its points to the user in memory, then fires "points_awarded" for that user.

- W1: ten non-multiple badges `points_0` .. `points_9` with levels Bronze/Silver/Gold; badge k
  gives the highest level whose threshold the user's points are above: `3000 + 400k` (1),
  `+ 2500` (2), `+ 5000` (3). At full size the table ends with exactly 7,173 awards.
- W2: one `multiple` single-level badge that always awards: one award per event.
- W4 (issue 14): a backfill of `users()`, the same seed's users with `rng.randint(0, 12000)`
  points each (the first 1,000 are W1's users before their events), over W1's badges: each
  user gets the level each badge gives at its points, one award per (user, badge).
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import sys
from collections.abc import Iterator, Sequence
from typing import Any

BADGES = 10
LEVELS = ["Bronze", "Silver", "Gold"]
EVENT = "points_awarded"


@dataclasses.dataclass
class Stream:
    """The users' starting points and the events, as the seed gives them."""

    points: list[int]
    events: list[tuple[int, int]]

    def replay(self) -> list[tuple[int, int]]:
        """`(user, points after the event)` for each event, in order."""
        points = list(self.points)
        totals = []
        for user, added in self.events:
            points[user] += added
            totals.append((user, points[user]))
        return totals


def stream(users: int = 1000, events: int = 10_000, seed: int = 42) -> Stream:
    rng = random.Random(seed)
    points = [rng.randint(0, 12000) for _ in range(users)]
    return Stream(points, [(rng.randrange(users), rng.randint(0, 100)) for _ in range(events)])


def w1_level(badge: int, points: int) -> int | None:
    """The level W1's badge `points_<badge>` gives at `points`, or None."""
    base = 3000 + 400 * badge
    if points > base + 5000:
        return 3
    if points > base + 2500:
        return 2
    if points > base:
        return 1
    return None


def expected_w1(workload: Stream) -> int:
    """How many awards W1 leaves in the table: each (user, badge, level) reached, once."""
    held = {
        (user, badge, level)
        for user, points in workload.replay()
        for badge in range(BADGES)
        if (level := w1_level(badge, points)) is not None
    }
    return len(held)


def users(count: int, seed: int = 42) -> Iterator[tuple[int, int]]:
    """W4's users as `(id, points)`, made one at a time: nothing grows with `count`."""
    rng = random.Random(seed)
    for user in range(count):
        yield user, rng.randint(0, 12000)


def expected_w4(count: int) -> int:
    """How many awards a backfill of W4's `count` users leaves: a level of each badge that
    gives one, per user."""
    return sum(
        w1_level(badge, points) is not None for _, points in users(count) for badge in range(BADGES)
    )


def percentile(latencies: Sequence[float], share: float) -> float:
    """The latency at `share` (0.99: p99; 1.0: the largest) of `latencies` in seconds, in ms."""
    ordered = sorted(latencies)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000, 3)


def measure(
    name: str,
    impl: str,
    database: str | None,
    seconds: float,
    latencies: Sequence[float],
    awards: int | None = None,
    expected: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A result record: rate, p50/p99 latency in ms, and the award count against the expected."""
    ordered = sorted(latencies)
    result: dict[str, Any] = {
        "workload": name,
        "impl": impl,
        "database": database,
        "events": len(ordered),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(ordered) / seconds, 1) if seconds else None,
        "p50_ms": round(statistics.median(ordered) * 1000, 3) if ordered else None,
        "p99_ms": percentile(ordered, 0.99) if ordered else None,
        "awards": awards,
        "expected": expected,
        "ok": awards == expected,
        **extra,
    }
    return result


def report(result: dict[str, Any]) -> None:
    """Print the result as a line of text, then as a JSON line (prefixed `json: `)."""
    rate = result.get("events_per_s")
    parts = [f"{result['workload']:<12} {result['impl']:<14} {result['database'] or '-':<10}"]
    if rate is not None:
        parts.append(f"{rate:>10,.0f}/s")
    if result.get("p50_ms") is not None:
        parts.append(f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms")
    if result.get("expected") is not None:
        verdict = "ok" if result["ok"] else "MISMATCH"
        parts.append(f"awards {result['awards']}/{result['expected']} {verdict}")
    extra = {k: v for k, v in result.items() if k not in _SHOWN}
    if extra:
        parts.append(" ".join(f"{k}={v}" for k, v in extra.items()))
    print("  ".join(parts))
    print("json: " + json.dumps(result, sort_keys=True))
    sys.stdout.flush()


_SHOWN = {
    "workload", "impl", "database", "events", "seconds", "events_per_s", "p50_ms", "p99_ms",
    "awards", "expected", "ok",
}  # fmt: skip
