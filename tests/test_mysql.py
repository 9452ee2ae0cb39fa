"""MySQL/MariaDB only: the inserts of one event are one transaction, and deadlocks are retried."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncmy
import databases
import pytest

from abadges import Award, Badge, BadgeAwarded, BadgeErrorGroup, BadgeRegistry, is_transient
from abadges.awarding import event_award_key
from abadges.storage import base as storage_base
from abadges.storage import mysql
from tests.support import Rows

pytestmark = pytest.mark.parametrize("database_url", ["mysql"], indirect=True)


class First(Badge):
    slug = "a-first"
    levels = ["First"]
    events = ["posted"]
    multiple = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class Second(First):
    slug = "b-second"
    levels = ["Second"]


class Levels(Badge):
    slug = "levels"
    levels = [f"Level {n}" for n in range(1, 11)]
    events = ["posted"]

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded(level=state["level"])


async def test_an_error_on_a_later_award_of_an_event_commits_none(
    registry: BadgeRegistry, stored_rows: Rows
) -> None:
    registry.register(First)
    registry.register(Second)
    announced: list[Award] = []
    registry.on_award(announced.append)
    database = registry.database
    # The second insert of the event fails in the server, as a deadlock or a bad value would.
    await database.execute(
        "CREATE TRIGGER abadges_test_refuse BEFORE INSERT ON abadges_awards FOR EACH ROW "
        "IF NEW.slug = 'b-second' THEN "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; END IF"
    )
    try:
        with pytest.raises(Exception, match="refused by the test"):
            await registry.possibly_award_badge("posted", user="ana", event_key="1")
    finally:
        await database.execute("DROP TRIGGER abadges_test_refuse")
    assert (await stored_rows(), announced) == ([], [])
    # The retry records both.
    assert len(await registry.possibly_award_badge("posted", user="ana", event_key="1")) == 2
    assert len(announced) == 2


@pytest.fixture
async def registries(registry: BadgeRegistry, database_url: str) -> AsyncIterator[BadgeRegistry]:
    """`registry` and a second one on the same database, as two processes would have them:
    in one registry the inserts take turns (group commit), across two they meet."""
    for badge in (First, Levels):
        registry.register(badge)
    other = BadgeRegistry()
    other.register(First)
    other.register(Levels)
    other.configure(database_url=database_url, notices=False, queue="inline")
    async with other.lifespan():
        yield other


async def test_revokes_racing_awards_retry_their_deadlocks(
    registry: BadgeRegistry, registries: BadgeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Revokes and the two inserts of each event deadlock in InnoDB (without the retries, 100
    of 720 calls raised `(1213, 'Deadlock found ...')`); each victim is run again whole."""
    announced: list[Award] = []
    registry.on_award(announced.append)
    registries.on_award(announced.append)
    caplog.set_level(logging.DEBUG, logger="abadges")
    revoked = 0

    async def post(key: int) -> None:
        await (registry, registries)[key % 2].possibly_award_badge(
            "posted", user="ana", level=key % 10 + 1, event_key=str(key)
        )

    async def revoke(slug: str) -> None:
        nonlocal revoked
        count = await registry.revoke("ana", slug)
        revoked += count

    def retries() -> int:
        return sum(r.getMessage().startswith("Deadlock (try ") for r in caplog.records)

    # Deadlocks depend on timing: a few bursts of events and revokes make one near certain.
    for burst in range(30):
        async with anyio.create_task_group() as group:
            for key in range(burst * 200, (burst + 1) * 200):
                group.start_soon(post, key)
                if key % 5 == 0:
                    group.start_soon(revoke, ("levels", "a-first")[key % 10 // 5])
        if retries():
            break
    assert retries(), "no deadlock happened: the test shows nothing"
    # Every award announced is held, or was revoked once.
    assert len(announced) == await registry.badge_count("ana") + revoked
    assert len([a for a in announced if a.slug == "a-first"]) == 200 * (burst + 1)


async def test_a_deadlock_that_persists_is_raised_as_transient(
    registry: BadgeRegistry, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadlock made on purpose: another transaction holds the row of ana's totals that the
    event's trigger needs, then inserts the award the event holds. InnoDB rolls back the
    lighter of the two, the event's; with one attempt allowed, the call raises it."""
    registry.register(First)
    registry.register(Levels)
    monkeypatch.setattr(storage_base, "DEADLOCK_ATTEMPTS", 1)
    await registry.possibly_award_badge("posted", user="ana", level=2, event_key="before")
    url = databases.DatabaseURL(database_url)
    other = await asyncmy.connect(
        host=url.hostname, port=url.port or 3306, user=url.username, db=url.database
    )
    errors: list[Exception] = []

    async def post() -> None:
        try:
            await registry.possibly_award_badge("posted", user="ana", level=1, event_key="now")
        except Exception as exc:
            errors.append(exc)

    try:
        async with other.cursor() as cursor:
            await cursor.execute("BEGIN")
            # Heavier than the event's transaction: InnoDB rolls back the one that changed the
            # fewest rows.
            rows = ", ".join(["(0, 'other', 'other', 1, 'granted', NOW(), 'event')"] * 200)
            await cursor.execute(
                "INSERT INTO abadges_history (award_id, user_id, slug, level, action, at, source) "
                f"VALUES {rows}"
            )
            await cursor.execute(
                "SELECT points FROM abadges_totals WHERE user_id = 'ana' AND slug = '' FOR UPDATE"
            )
            async with anyio.create_task_group() as group:
                group.start_soon(post)
                with anyio.fail_after(10):
                    while True:  # The event's trigger waits for the totals row.
                        await cursor.execute(
                            "SELECT COUNT(*) FROM information_schema.processlist "
                            "WHERE info LIKE 'INSERT INTO abadges_totals %'"
                        )
                        if (await cursor.fetchone())[0]:
                            break
                        await anyio.sleep(0.01)
                key = event_award_key("posted", "ana", "now")
                await cursor.execute(
                    "INSERT INTO abadges_awards (user_id, slug, level, awarded_at, award_key) "
                    "VALUES ('ana', 'a-first', 1, NOW(), %s)",
                    (key,),
                )
            await cursor.execute("ROLLBACK")
    finally:
        other.close()
    [error] = errors
    assert error.args[0] == mysql.LOCK_DEADLOCK and is_transient(error), repr(error)
    # Nothing of the victim was committed: run again, the event records both awards.
    assert (
        len(await registry.possibly_award_badge("posted", user="ana", level=1, event_key="now"))
        == 2
    )


class Ladder(Badge):
    slug = "ladder"
    levels = ["Rung 1", "Rung 2"]
    events = ["climbed"]
    replaces_lower = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded(level=state["level"])


async def test_a_settlement_that_cannot_take_its_lock_says_whose_it_is(
    registry: BadgeRegistry, monkeypatch: pytest.MonkeyPatch, stored_rows: Rows
) -> None:
    registry.register(Ladder)
    registry.register(First)
    monkeypatch.setattr(mysql, "SETTLE_LOCK_TIMEOUT", 0)
    store = registry._connected_store()
    assert isinstance(store, mysql.MySQLStore)
    name = store.settle_lock_name("ana", "ladder")
    async with registry.database.connection() as other:
        assert await other.fetch_val(f"SELECT GET_LOCK('{name}', 0)") == 1
        try:
            with pytest.raises(BadgeErrorGroup) as caught:
                await registry.possibly_award_badge("climbed", user="ana", level=1)
        finally:
            await other.fetch_val(f"SELECT RELEASE_LOCK('{name}')")
    [error] = caught.value.exceptions
    assert isinstance(error, TimeoutError) and is_transient(error)
    assert str(error) == (
        "Another connection held the lock of the levels user 'ana' holds of badge 'ladder' for "
        "0 seconds."
    )
    assert error.__notes__ == ["Raised by badge 'ladder' on event 'climbed'."]
    assert await stored_rows() == []
    # Free again: the lock was released, the retry records it.
    [award] = await registry.possibly_award_badge("climbed", user="ana", level=1)
    assert award.slug == "ladder"
