"""Group commit: concurrent calls share their inserts, each getting exactly its own part."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from abadges import Award, Badge, BadgeAwarded, BadgeDetail, BadgeRegistry
from abadges._batching import Batcher
from abadges.storage.base import NewAward, Store, Written, text
from abadges.storage.group_commit import ALONE, GroupCommit
from abadges.tables import awards
from tests.support.badges import RankBadge, ThanksBadge

CALLERS = 8


class HugeBadge(Badge):
    """Worth more points than the awards table's integer column holds (PostgreSQL, MySQL)."""

    slug = "huge"
    levels = [BadgeDetail("Huge", points=2**40)]
    events = ["ranked"]

    def award(self, **state: Any) -> BadgeAwarded | None:
        return BadgeAwarded() if state.get("huge") else None


class FadingBadge(Badge):
    slug = "fading"
    levels = ["Fading"]
    events = ["faded"]
    expires_after = datetime.timedelta(hours=1)

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class Inserts:
    """Counts the store's insert statements and the awards each was given."""

    def __init__(self, store: Store) -> None:
        self.sizes: list[int] = []
        self._insert = store.insert

    async def __call__(self, new_awards: Sequence[NewAward]) -> Written:
        self.sizes.append(len(new_awards))
        return await self._insert(new_awards)


@pytest.fixture
def inserts(registry: BadgeRegistry, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inserts]:
    store = registry._connection.store  # type: ignore[union-attr]
    counter = Inserts(store)
    monkeypatch.setattr(store, "insert", counter)
    yield counter


async def at_once(count: int, call: Any) -> list[Any]:
    """`call(i)` for each i below `count`, started together; their results, or errors."""
    results: list[Any] = [None] * count

    async def run(i: int) -> None:
        try:
            results[i] = await call(i)
        except Exception as exc:
            results[i] = exc

    async with anyio.create_task_group() as group:
        for i in range(count):
            group.start_soon(run, i)
    return results


async def held_keys(registry: BadgeRegistry) -> list[tuple[str, str, int]]:
    rows = await registry.database.fetch_all(
        sa.select(awards.c.user_id, awards.c.slug, awards.c.level).order_by(awards.c.id)
    )
    return [(text(row[0]), text(row[1]), int(row[2])) for row in rows]


# The batcher ----------------------------------------------------------------------------------


async def test_a_lone_call_runs_at_once_and_the_calls_behind_it_run_as_one() -> None:
    runs: list[list[int]] = []
    release = anyio.Event()

    async def run(items: list[int]) -> list[int | Exception]:
        runs.append(items)
        if len(runs) == 1:
            await release.wait()
        return [item * 10 for item in items]

    batcher = Batcher[int, int](run)
    results: dict[int, int] = {}

    async def call(item: int) -> None:
        results[item] = await batcher(item)

    async with anyio.create_task_group() as group:
        group.start_soon(call, 0)
        await anyio.wait_all_tasks_blocked()
        for item in (1, 2, 3):
            group.start_soon(call, item)
        await anyio.wait_all_tasks_blocked()
        assert runs == [[0]]  # The others wait for the run in flight, not each for its own.
        release.set()
    assert runs == [[0], [1, 2, 3]]
    assert results == {0: 0, 1: 10, 2: 20, 3: 30}
    assert await batcher(4) == 40  # Idle again: alone, at once.
    assert runs[-1] == [4]


async def test_each_caller_gets_its_own_error_and_a_failed_run_reaches_all_of_its_callers() -> None:
    release = anyio.Event()
    fail = {"run": False}

    async def run(items: list[int]) -> list[int | Exception]:
        if items == [0]:
            await release.wait()
        if fail["run"]:
            raise RuntimeError(f"run of {items} failed")
        return [ValueError(f"item {i}") if i % 2 else i for i in items]

    batcher = Batcher[int, int](run)

    async def first_then(items: Sequence[int]) -> list[Any]:
        async with anyio.create_task_group() as group:
            group.start_soon(at_once, 1, lambda _: batcher(0))
            await anyio.wait_all_tasks_blocked()
            results = []

            async def rest() -> None:
                results.extend(await at_once(len(items), lambda i: batcher(items[i])))

            group.start_soon(rest)
            await anyio.wait_all_tasks_blocked()
            release.set()
        return results

    results = await first_then([1, 2, 3])
    assert [str(r) if isinstance(r, Exception) else r for r in results] == ["item 1", 2, "item 3"]

    release = anyio.Event()
    fail["run"] = True
    errors = await first_then([4, 5])
    assert [str(e) for e in errors] == ["run of [4, 5] failed"] * 2
    fail["run"] = False
    assert await batcher(6) == 6  # The failed run left nothing stuck.


async def test_a_cancelled_caller_still_gets_its_batch_run() -> None:
    release = anyio.Event()
    ran: list[list[int]] = []

    async def run(items: list[int]) -> list[int | Exception]:
        ran.append(items)
        if items == [0]:
            await release.wait()
        return list(items)

    batcher = Batcher[int, int](run)
    async with anyio.create_task_group() as group:
        group.start_soon(batcher, 0)
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            group.start_soon(batcher, 1)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
        group.cancel_scope.cancel()  # The leader of the next batch is cancelled as it waits.
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert ran == [[0], [1]]  # Its batch ran anyway: nothing waits behind it forever.
    assert await batcher(2) == 2


# Group commit in the award flow ---------------------------------------------------------------


async def test_concurrent_events_share_one_insert_each_getting_its_own_awards(
    registry: BadgeRegistry, inserts: Inserts
) -> None:
    registry.register(RankBadge)

    async def call(i: int) -> list[Award]:
        return await registry.possibly_award_badge("ranked", user=f"u{i}", level=1 + i % 3)

    results = await at_once(CALLERS, call)
    # The first runs alone; the others waited for it, then went in one statement.
    assert inserts.sizes == [1, CALLERS - 1]
    assert [[(a.user_id, a.level) for a in r] for r in results] == [
        [(f"u{i}", 1 + i % 3)] for i in range(CALLERS)
    ]
    assert sorted(a.id for r in results for a in r) == sorted(
        int(row[0]) for row in await registry.database.fetch_all(sa.select(awards.c.id))
    )
    changes = await registry.history()
    assert sorted((c.user_id, c.action) for c in changes) == [
        (f"u{i}", "granted") for i in range(8)
    ]
    # The totals that the triggers keep saw each award once.
    standings = await registry.leaderboard(limit=20)
    assert sorted((s.user_id, s.awards) for s in standings) == [(f"u{i}", 1) for i in range(8)]


async def test_callers_racing_for_one_level_in_a_batch_record_it_once(
    registry: BadgeRegistry, inserts: Inserts
) -> None:
    registry.register(RankBadge)

    async def call(i: int) -> list[Award]:
        return await registry.possibly_award_badge("ranked", user="racer", level=2)

    results = await at_once(CALLERS, call)
    assert inserts.sizes == [1, 1]  # The batch's seven identical awards were inserted as one.
    assert sum(len(r) for r in results) == 1
    assert await held_keys(registry) == [("racer", "rank", 2)]
    assert len(await registry.history(user="racer")) == 1


async def test_awards_of_a_multiple_badge_for_one_user_go_to_their_own_callers(
    registry: BadgeRegistry, inserts: Inserts
) -> None:
    registry.register(ThanksBadge)

    async def call(i: int) -> list[Award]:
        return await registry.possibly_award_badge("thanked", user="thanked", event_key=f"e{i}")

    results = await at_once(CALLERS, call)
    # Same user and level under other keys: each waits for a statement of its own, so that
    # whose award each recorded row is stays certain.
    assert inserts.sizes == [1] * CALLERS
    assert [len(r) for r in results] == [1] * CALLERS
    assert len({a.id for r in results for a in r}) == CALLERS
    again = await at_once(CALLERS, call)  # The same event keys: all held already.
    assert again == [[]] * CALLERS
    assert len(await held_keys(registry)) == CALLERS


async def test_an_expired_award_replaced_in_a_batch_is_its_callers_to_announce(
    registry: BadgeRegistry, inserts: Inserts
) -> None:
    registry.register(FadingBadge)
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    for i in range(CALLERS):
        await registry.possibly_award_badge("faded", user=f"u{i}", force_timestamp=long_ago)
    revoked: list[Award] = []
    registry.on_revoke(revoked.append)
    inserts.sizes.clear()

    results = await at_once(CALLERS, lambda i: registry.possibly_award_badge("faded", user=f"u{i}"))
    assert inserts.sizes == [1, CALLERS - 1]
    assert [[a.user_id for a in r] for r in results] == [[f"u{i}"] for i in range(CALLERS)]
    assert sorted(a.user_id for a in revoked) == [f"u{i}" for i in range(CALLERS)]
    actions = [(c.user_id, c.action) for c in await registry.history(user="u5")]
    assert actions == [("u5", "granted"), ("u5", "expired"), ("u5", "granted")]


async def test_a_large_insert_runs_at_once_beside_the_one_in_flight(
    registry: BadgeRegistry, inserts: Inserts
) -> None:
    """A backfill's batches are batches already: they keep running in parallel."""
    group = GroupCommit(registry._connection.store)  # type: ignore[union-attr]
    now = datetime.datetime.now(datetime.UTC)

    def part(name: str, size: int) -> list[NewAward]:
        return [NewAward(f"{name}{i}", "rank", 1, now) for i in range(size)]

    parts = [part("small", 1), *(part(f"big{n}-", ALONE) for n in range(3)), part("last", 1)]
    written = await at_once(len(parts), lambda i: group.insert(parts[i]))
    assert sorted(inserts.sizes) == sorted([1, ALONE, ALONE, ALONE, 1])
    assert [len(w.recorded) for w in written] == [len(p) for p in parts]


@pytest.mark.parametrize("database_url", ["postgresql", "mysql"], indirect=True)
async def test_a_failed_shared_insert_runs_each_callers_part_alone(
    registry: BadgeRegistry, inserts: Inserts
) -> None:
    registry.register(RankBadge)
    registry.register(HugeBadge)

    async def call(i: int) -> list[Award]:
        return await registry.possibly_award_badge("ranked", user=f"u{i}", level=1, huge=i == 3)

    results = await at_once(CALLERS, call)
    # The batch failed on u3's huge points, then each of its callers' inserts ran alone.
    assert inserts.sizes == [1, CALLERS, 1, 1, 2, 1, 1, 1, 1]
    for i, result in enumerate(results):
        if i == 3:
            assert isinstance(result, Exception)
            assert "range" in str(result)
        else:
            assert [(a.user_id, a.slug) for a in result] == [(f"u{i}", "rank")]
    assert sorted(await held_keys(registry)) == sorted(
        (f"u{i}", "rank", 1) for i in range(CALLERS) if i != 3
    )
    assert len(await registry.history()) == CALLERS - 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_connection_error_of_the_shared_insert_is_every_callers(
    registry: BadgeRegistry, inserts: Inserts, database_url: str
) -> None:
    registry.register(RankBadge)
    store = registry._connection.store  # type: ignore[union-attr]
    async with store.connection() as connection:
        await connection.execute("PRAGMA busy_timeout = 50")
    # Another process writes: "database is locked" once the busy timeout runs out.
    blocker = sqlite3.connect(database_url.split("///", 1)[1], timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        results = await at_once(
            CALLERS, lambda i: registry.possibly_award_badge("ranked", user=f"u{i}", level=1)
        )
    finally:
        blocker.rollback()
        blocker.close()
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert all("locked" in str(r) for r in results)
    # Transient, so not run again alone: each caller retries (or its job does) as it would
    # have alone.
    assert inserts.sizes == [1, CALLERS - 1]
    assert await held_keys(registry) == []
    assert await registry.possibly_award_badge("ranked", user="u0", level=1) != []
