"""Invariant 1: concurrent events from several processes never record a level twice."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from abadges import BadgeRegistry
from abadges.tables import history
from tests.support import Rows
from tests.support.race_child import FleetingBadge, LadderBadge, RaceBadge, RankNowBadge

CHILD = Path(__file__).parent / "support" / "race_child.py"
PROCESSES = 3
CALLS = 10  # per process: 30 calls, 10 for each of the three levels


async def read_line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", 1 << 16)).decode()


async def race(database_url: str, calls: int, *mode: str) -> list[Any]:
    """What each of PROCESSES children, started on "go" at once, printed."""
    processes: list[Process] = []
    try:
        for _ in range(PROCESSES):
            processes.append(
                await anyio.open_process(
                    [sys.executable, str(CHILD), database_url, str(calls), *mode]
                )
            )
        outputs = [BufferedByteReceiveStream(p.stdout) for p in processes]  # type: ignore[arg-type]
        with anyio.fail_after(60):
            for output in outputs:
                assert await read_line(output) == "ready"
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            printed = [json.loads(await read_line(output)) for output in outputs]
            assert [await process.wait() for process in processes] == [0] * PROCESSES
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return printed


async def history_by_award(registry: BadgeRegistry, slug: str) -> dict[int, list[str]]:
    """The actions of the history of each award of `slug`, in the order they were written."""
    by_award: dict[int, list[str]] = {}
    rows = await registry.database.fetch_all(
        history.select().where(history.c.slug == slug).order_by(history.c.id)
    )
    for row in rows:
        by_award.setdefault(int(row["award_id"]), []).append(row["action"])
    return by_award


async def test_concurrent_processes_record_each_level_once(
    registry: BadgeRegistry, database_url: str, stored_rows: Rows
) -> None:
    registry.register(RaceBadge)
    recorded = await race(database_url, CALLS)

    assert sorted(await stored_rows()) == [
        ("racer", "race", 1),
        ("racer", "race", 2),
        ("racer", "race", 3),
    ]
    ids = [award_id for ids in recorded for award_id in ids]
    assert len(ids) == 3, f"each level must be reported recorded by exactly one call: {recorded}"
    assert sorted(ids) == sorted(a.id for a in await registry.holders("race"))


async def test_revokes_racing_awards_across_processes_keep_the_history_whole(
    registry: BadgeRegistry, database_url: str
) -> None:
    """Each award has exactly one "granted" row, at most one "revoked" row, and is held
    exactly when it has none; every award a call reported and every revoke is in it."""
    registry.register(RaceBadge)
    recorded: list[int] = []
    revoked = 0
    for _ in range(5):  # Timing decides whether a revoke meets an award: a few rounds do.
        printed = await race(database_url, 60, "revoke")
        recorded += [award_id for out in printed for award_id in out["recorded"]]
        revoked += sum(out["revoked"] for out in printed)
        if revoked:
            break
    assert revoked, "no revoke raced an award"
    held = {a.id for a in await registry.holders("race")}
    by_award = await history_by_award(registry, "race")
    assert sorted(by_award) == sorted(recorded)
    for award_id, actions in by_award.items():
        assert actions in (["granted"], ["granted", "revoked"]), (award_id, actions)
        assert (actions == ["granted"]) == (award_id in held), (award_id, actions)
    assert sum(actions == ["granted", "revoked"] for actions in by_award.values()) == revoked


async def test_temporary_re_evaluations_racing_across_processes_settle_one_at_a_time(
    registry: BadgeRegistry, database_url: str
) -> None:
    """RankNowBadge is temporary and replaces lower levels: whatever the order the evaluations
    take, the user ends with at most one level, and each award has its "granted" row and, if
    no longer held, one row that ended it."""
    registry.register(RankNowBadge)
    printed = await race(database_url, 40, "settle")
    recorded = [award_id for ids in printed for award_id in ids]
    held = {a.id: a.level for a in await registry.holders("rank-now")}
    assert len(held) <= 1, held
    by_award = await history_by_award(registry, "rank-now")
    assert sorted(by_award) == sorted(recorded)
    for award_id, actions in by_award.items():
        assert actions in (["granted"], ["granted", "revoked"], ["granted", "replaced"]), actions
        assert (actions == ["granted"]) == (award_id in held), (award_id, actions)


async def test_levels_racing_across_processes_leave_only_the_highest(
    registry: BadgeRegistry, database_url: str
) -> None:
    """Without the lock of a user's levels, two evaluations giving levels 2 and 3 at once
    would each miss the other's and leave both held."""
    registry.register(LadderBadge)
    printed = await race(database_url, 30, "climb")
    recorded = [award_id for ids in printed for award_id in ids]
    [top] = await registry.holders("ladder")
    assert top.level == 3
    by_award = await history_by_award(registry, "ladder")
    assert sorted(by_award) == sorted(recorded)
    assert by_award.pop(top.id) == ["granted"]
    assert all(actions == ["granted", "replaced"] for actions in by_award.values()), by_award


async def test_awards_racing_their_own_expiry_across_processes_move_each_once(
    registry: BadgeRegistry, database_url: str
) -> None:
    """FleetingBadge expires 0.2 s after each award; for a second, calls earn it again and
    run the expiry. No award is held twice, each reported award is in the history, and once
    all have expired each has exactly one "expired" row after its "granted" one."""
    registry.register(FleetingBadge)
    printed = await race(database_url, 30, "expire")
    recorded = [award_id for out in printed for award_id in out["recorded"]]
    assert len(recorded) > 1, "no award expired and was earned again"
    await anyio.sleep(0.3)
    await registry.expire_awards()
    assert await registry.holders("fleeting") == []
    by_award = await history_by_award(registry, "fleeting")
    assert sorted(by_award) == sorted(recorded)
    assert all(actions == ["granted", "expired"] for actions in by_award.values()), by_award
