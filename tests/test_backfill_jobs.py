"""A deferred backfill's jobs, with a worker in this process: the payload's checks, what the
run sends and refuses, and the worker's retries."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from abadges import BackfillJobError, BadgeRegistry, InvalidJobError, backfill_jobs
from abadges.backfill_jobs import BatchJob
from tests.test_backfill import FanBadge, Member, RankBadge, all_awards
from tests.test_worker import drain

GOOD = BatchJob("r" * 32, 0, ["ana"], ["rank"], False, False, True).to_payload()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "is not a version-1 abadges backfill batch: []"),
        ({**GOOD, "v": 2}, "is not a version-1 abadges backfill batch"),
        ({k: v for k, v in GOOD.items() if k != "users"}, "has no ['users']"),
        ({**GOOD, "batch": -1}, "field 'batch' is not valid: -1"),
        ({**GOOD, "users": ["ana", ""]}, "field 'users' is not valid"),
        ({**GOOD, "badges": []}, "field 'badges' is not valid"),
        ({**GOOD, "revoke": 1}, "field 'revoke' is not valid"),
    ],
)
def test_a_payload_that_is_no_batch_is_refused_naming_its_fault(
    payload: object, message: str
) -> None:
    with pytest.raises(InvalidJobError) as caught:
        BatchJob.from_payload(payload)
    assert message in str(caught.value)
    assert BatchJob.from_payload(GOOD).users == ["ana"]


@pytest.fixture
async def site(registry: BadgeRegistry) -> BadgeRegistry:
    registry.register(RankBadge)
    registry.register(FanBadge)
    return registry


POINTS = {"ana": 300, "bob": 2}


def load_member(user_id: str) -> Member:
    return Member(user_id, POINTS[user_id])


def worker_of(site: BadgeRegistry, *badges: Any) -> BadgeRegistry:
    worker = BadgeRegistry()
    for badge in badges:
        worker.register(badge)
    settings = site.settings
    worker.configure(
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        queue_name=settings.queue_name,
        user_loader=load_member,
    )
    return worker


async def test_users_without_an_identity_are_counted_and_sent_to_no_worker(
    site: BadgeRegistry,
) -> None:
    # No worker runs: a batch with no identity in it must not wait for one.
    with anyio.fail_after(10):
        report = await site.backfill([object(), object()], deferred=True, batch_size=1)
    assert (report.users, report.failed, len(report.errors)) == (2, 4, 2)
    assert "Raised while loading user <object object" in report.errors[0].__notes__[0]


async def test_a_batch_too_big_for_a_job_is_refused_before_it_is_sent(site: BadgeRegistry) -> None:
    ids = (f"{n:0250d}" for n in range(4100))
    with pytest.raises(ValueError, match="over the 1000000-byte limit of a job: give a smaller"):
        await site.backfill(ids, deferred=True, batch_size=4100)


async def test_a_run_waiting_for_a_worker_says_so_then_gets_its_report(
    site: BadgeRegistry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill_jobs, "WAITING_NOTICE", 0.0)
    monkeypatch.setattr(backfill_jobs, "POLL", 0.2)
    caplog.set_level(logging.WARNING, "abadges")
    users = [Member("ana", 300), Member("bob", 2)]
    async with anyio.create_task_group() as group:
        reports: list[Any] = []

        async def run() -> None:
            reports.append(await site.backfill(users, deferred=True))

        group.start_soon(run)
        with anyio.fail_after(10):
            while "has waited" not in caplog.text:  # noqa: ASYNC110 - logging sends no event.
                await anyio.sleep(0.05)
        worker = worker_of(site, RankBadge, FanBadge)
        await drain(worker)
        await worker.disconnect()  # A burst worker leaves its registry connected.
    assert "Batch 0 of the backfill has waited" in caplog.text
    assert reports[0].granted == 3
    assert [a[:3] for a in await all_awards(site)] == [
        ("ana", "fan", 1),
        ("ana", "rank", 3),
        ("bob", "fan", 1),
    ]


async def test_a_batch_the_worker_cannot_run_is_retried_then_ends_the_run(
    site: BadgeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    # The worker lacks badge "fan" (deploy skew): it retries; arq gives up after max_tries.
    async with anyio.create_task_group() as group:
        errors: list[BaseException] = []

        async def run() -> None:
            with pytest.raises(BackfillJobError) as caught:
                await site.backfill([Member("ana", 2)], deferred=True)
            errors.append(caught.value)

        group.start_soon(run)
        await anyio.sleep(0.2)
        worker = worker_of(site, RankBadge)
        await drain(worker, max_tries=2)
        await worker.disconnect()
    assert "could not run its backfill batch (try 1)" in caplog.text
    assert "its job ended without a report" in str(errors[0])
    assert await all_awards(site) == []
