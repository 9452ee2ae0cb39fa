"""Real `arq` worker processes: `arq abadges.worker.Settings` as written, and a worker killed
with SIGKILL in the middle of a job."""

from __future__ import annotations

import collections
import datetime
import os
import pathlib
import pickle
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import anyio
import anyio.abc
import pytest
import redis.asyncio

from abadges import BadgeRegistry
from abadges.testing import RedisServer
from abadges.worker import live_workers
from tests.support import Rows, fill_to_the_brim, push, stop, wait_until_drained, worker
from tests.support.deferred_badges import (
    ActiveBadge,
    AddictBadge,
    RegularBadge,
    VisitorBadge,
    WeeklyBadge,
    record_visit,
)

ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture
def worker_env(
    database_url: str,
    redis_url: str,
    queue_name: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The environment of a worker process; this process freezes state on 2024-05-07, the
    worker evaluates it on 2024-06-30."""
    monkeypatch.setenv("ABADGES_TEST_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("ABADGES_TEST_TODAY", "2024-05-07")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ABADGES_DATABASE_URL": database_url,
        "ABADGES_REDIS_URL": redis_url,
        "ABADGES_QUEUE_NAME": queue_name,
        "ABADGES_BADGES": "tests.support.deferred_worker",
        "ABADGES_USER_LOADER": "tests.support.deferred_badges:load_user",
        "ABADGES_TEST_TODAY": "2024-06-30",
    }


@pytest.fixture
def app(registry: BadgeRegistry) -> BadgeRegistry:
    for badge_class in (AddictBadge, VisitorBadge, RegularBadge):
        registry.register(badge_class)
    return registry


def announcements(state_dir: pathlib.Path) -> list[list[str]]:
    path = state_dir / "announced.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def test_the_worker_awards_deferred_badges_on_the_frozen_state(
    app: BadgeRegistry,
    worker_env: dict[str, str],
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    tmp_path: pathlib.Path,
) -> None:
    for day in range(1, 8):
        record_visit("ana", datetime.date(2024, 5, day))
    record_visit("bob", datetime.date(2024, 5, 7))
    assert await app.possibly_award_badge("visited", user="ana") == []
    assert await app.possibly_award_badge("visited", user="bob") == []

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (pathlib.Path.touch, (tmp_path / "pwned",))

    await push(redis_url, queue_name, pickle.dumps({"f": "abadges.award", "a": [Exploit()]}))
    await push(redis_url, queue_name, b"not json")

    log = tmp_path / "worker.log"
    async with worker(worker_env, log) as process:
        with anyio.fail_after(30):
            await wait_until_drained(redis_url, queue_name)
    assert process.returncode == 0, log.read_text()

    # The worker's day is 2024-06-30: ana's week of visits counts only because freeze() kept
    # the day of the event.
    assert sorted(await stored_rows()) == [
        ("ana", "addict", 1),
        ("ana", "regular", 2),
        ("ana", "visitor", 1),
        ("bob", "regular", 1),
        ("bob", "visitor", 1),
    ]
    # Callbacks ran once per award, in the worker.
    announced = announcements(tmp_path)
    assert len(announced) == 5
    assert {pid for *_, pid in announced} == {str(process.pid)}
    # Bad payloads were refused, logged, and nothing of them ran.
    output = log.read_text()
    assert not (tmp_path / "pwned").exists()
    assert "a pickle; abadges jobs are JSON and pickle is never loaded." in output
    assert "Job payload is not JSON" in output


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_job_killed_midway_is_rerun_and_recorded_once(
    app: BadgeRegistry,
    worker_env: dict[str, str],
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    tmp_path: pathlib.Path,
) -> None:
    users = ["u1", "u2", "u3", "u4"]
    for user in users:
        await app.possibly_award_badge("visited", user=user)
    # u3's job hangs in its first on_award callback, after its awards are committed.
    env = {**worker_env, "ABADGES_TEST_HANG_USER": "u3"}
    settings = "tests.support.deferred_worker.QuickRetrySettings"
    log = tmp_path / "worker.log"
    async with worker(env, log, settings) as first:
        # Kill it once u3's job hangs and the other jobs, running beside it, have finished.
        with anyio.fail_after(20):
            while not (tmp_path / "hung").exists() or len(announcements(tmp_path)) < 7:  # noqa: ASYNC110 - another process writes them
                await anyio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert first.returncode == -signal.SIGKILL

    # arq re-runs the killed job once its in-progress key expires (job_timeout + 10 s).
    async with worker(env, log, settings):
        with anyio.fail_after(40):
            await wait_until_drained(redis_url, queue_name)

    rows = await stored_rows()
    assert sorted(rows) == sorted(
        (user, slug, 1) for user in users for slug in ("regular", "visitor")
    )
    announced = collections.Counter((user, slug) for user, slug, *_ in announcements(tmp_path))
    # Each award is announced at most once: the re-run records nothing new, so it announces
    # nothing; only the awards the killed worker never got to announce go unannounced.
    assert max(announced.values()) == 1
    assert all(
        announced[user, slug] == 1 for user in ("u1", "u2", "u4") for slug in ("regular", "visitor")
    )
    assert "try=2" in log.read_text()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_worker_drains_a_full_redis_and_records_each_award_once(
    registry: BadgeRegistry,
    worker_env: dict[str, str],
    redis_server: RedisServer,
    stored_rows: Rows,
    tmp_path: pathlib.Path,
) -> None:
    # A noeviction Redis full of queued jobs, as after a long worker outage: it refuses the
    # app's next job, and every write that may take memory.
    await registry.disconnect()
    registry.configure(redis_url=redis_server.url)
    registry.register(VisitorBadge)
    async with registry.lifespan():
        queued = await fill_to_the_brim(registry, "visited")
    assert queued >= 200
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            await client.set("probe", "1")

        log = tmp_path / "worker.log"
        env = {**worker_env, "ABADGES_REDIS_URL": redis_server.url}
        async with worker(env, log) as process:
            with anyio.fail_after(20):
                while await client.zcard(registry.settings.queue_name):
                    assert process.returncode is None, log.read_text()[-3000:]
                    await anyio.sleep(0.1)
        output = log.read_text()
        assert process.returncode == 0, output[-3000:]

        users = [f"u{n}" for n in range(queued)]
        assert sorted(await stored_rows()) == sorted((user, "visitor", 1) for user in users)
        announced = collections.Counter(user for user, *_ in announcements(tmp_path))
        assert announced == dict.fromkeys(users, 1)
        # Nothing of the jobs is left, and Redis has room again. (arq keeps a cron job's
        # claim for a minute after it ran, so that no other worker runs it again.)
        left = [key async for key in client.scan_iter(match="arq:*")]
        assert [key for key in left if b":abadges.expire:" not in key] == []
        assert await client.set("probe", "1")
    finally:
        await client.aclose()
    full = [line for line in output.splitlines() if "out of memory" in line]
    assert full == [
        f"Redis at {redis_server.url} is out of memory (maxmemory reached, noeviction): it "
        "refuses new jobs. The worker goes on draining the queue, which frees memory; its "
        "bookkeeping (claims, try counts, health keys: a few dozen bytes a running job) goes "
        "past maxmemory."
    ]
    assert f"Redis at {redis_server.url} has room again" in output
    assert "Traceback" not in output


async def wait_for_live(redis_url: str, queue_name: str, pids: set[int]) -> None:
    """Wait until the live workers of the queue are exactly `pids`."""
    with anyio.fail_after(20):
        while {w["pid"] for w in await live_workers(redis_url, queue_name)} != pids:  # noqa: ASYNC110
            await anyio.sleep(0.1)


async def test_the_health_check_is_right_for_each_worker_process(
    app: BadgeRegistry,
    worker_env: dict[str, str],
    redis_url: str,
    queue_name: str,
    tmp_path: pathlib.Path,
) -> None:
    settings = "tests.support.deferred_worker.QuickHealthSettings"
    async with (
        worker(worker_env, tmp_path / "first.log", settings) as first,
        worker(worker_env, tmp_path / "second.log", settings) as second,
    ):
        await wait_for_live(redis_url, queue_name, {first.pid, second.pid})
        [live] = await live_workers(redis_url, queue_name, pid=second.pid)
        assert (live["pid"], live["queue"]) == (second.pid, queue_name)
        assert (await check(worker_env, "--pid", str(first.pid))).returncode == 0

        # One of two workers stops: the other is still live (arq's own check fails it).
        await stop(first)
        failed = await check(worker_env, "--pid", str(first.pid))
        assert failed.returncode == 1
        assert failed.stderr.decode() == (
            f"Error: No live worker of queue {queue_name!r} on host {socket.gethostname()!r} "
            f"(process {first.pid}): its health key has lapsed, so the worker has stopped, died "
            "or is stuck.\n"
        )
        await anyio.sleep(2)  # Longer than the health key lives unrefreshed.
        passed = await check(worker_env, "--pid", str(second.pid))
        assert passed.stdout.decode() == f"Live workers of queue {queue_name!r}: {second.pid}.\n"
        assert (await check(worker_env)).returncode == 0

        # The only worker left is killed: its check fails once its key lapses (1.5 s here),
        # not an hour later.
        second.send_signal(signal.SIGKILL)
        await second.wait()
        started = time.monotonic()
        await wait_for_live(redis_url, queue_name, set())
        assert time.monotonic() - started < 2
        assert (await check(worker_env, "--json")).returncode == 1


async def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """`abadges worker check ARGS` as a liveness probe runs it."""
    command = [str(pathlib.Path(sys.executable).parent / "abadges"), "worker", "check", *args]
    return await anyio.run_process(command, env=env, check=False)


BADGE_MODULE = """
from abadges import Badge, BadgeAwarded, badges


@badges.register
class Seen(Badge):
    slug, levels, events, deferred = "seen", ["Seen"], ["visited"], True

    def award(self, **state):
        return BadgeAwarded()
"""
NEW_BADGE = """

@badges.register
class Fresh(Badge):
    slug, levels, events, deferred = "fresh", ["Fresh"], ["visited"], True

    def award(self, **state):
        return BadgeAwarded()
"""


async def test_a_job_for_a_badge_the_worker_lacks_waits_for_an_updated_worker(
    registry: BadgeRegistry,
    worker_env: dict[str, str],
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    tmp_path: pathlib.Path,
) -> None:
    # The app is deployed with a new badge before the workers are.
    (tmp_path / "badges_v1.py").write_text(BADGE_MODULE)
    (tmp_path / "badges_v2.py").write_text(BADGE_MODULE + NEW_BADGE)
    namespace: dict[str, Any] = {}
    exec(
        BADGE_MODULE.replace("@badges.register", "") + NEW_BADGE.replace("@badges.register", ""),
        namespace,
    )
    registry.register(namespace["Seen"])
    registry.register(namespace["Fresh"])
    await registry.possibly_award_badge("visited", user="ana")

    env = {**worker_env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{worker_env['PYTHONPATH']}"}
    old_log = tmp_path / "old.log"
    async with worker({**env, "ABADGES_BADGES": "badges_v1"}, old_log):
        with anyio.fail_after(20):
            while "deploy skew" not in old_log.read_text():  # noqa: ASYNC110
                await anyio.sleep(0.05)
    assert await stored_rows() == [("ana", "seen", 1)]
    assert (
        "names a badge this worker does not register (deploy skew: update the workers) "
        "(try 1): BadgeNotRegisteredError: No badge with slug 'fresh' is registered"
    ) in old_log.read_text()

    async with worker({**env, "ABADGES_BADGES": "badges_v2"}, tmp_path / "new.log"):
        with anyio.fail_after(30):
            await wait_until_drained(redis_url, queue_name)
    assert sorted(await stored_rows()) == [("ana", "fresh", 1), ("ana", "seen", 1)]


async def test_the_worker_settles_a_deferred_temporary_badge_as_the_app_would(
    registry: BadgeRegistry,
    worker_env: dict[str, str],
    redis_url: str,
    queue_name: str,
    tmp_path: pathlib.Path,
) -> None:
    """The worker's flow is the app's: it raises, lowers and revokes a temporary badge's
    levels, writing the history and calling on_revoke."""
    registry.register(ActiveBadge)
    log = tmp_path / "worker.log"

    async def active_after(days: list[int]) -> list[int]:
        (tmp_path / "visits-ana.json").unlink(missing_ok=True)
        for day in days:
            record_visit("ana", datetime.date(2024, 5, day))
        assert await registry.possibly_award_badge("active", user="ana") == []
        with anyio.fail_after(30):
            await wait_until_drained(redis_url, queue_name)
        return [a.level for a in await registry.awards_for("ana")]

    async with worker(worker_env, log) as process:
        assert await active_after([6, 7]) == [1]
        assert await active_after([3, 4, 5, 6, 7]) == [2]  # Level 2 replaces level 1.
        assert await active_after([7]) == []  # Temporary: revoked.
    history = [(c.action, c.level, c.source, c.reason) for c in await registry.history("ana")]
    assert history == [
        ("revoked", 2, "deferred", "Temporary badge: award() now gives no level."),
        ("granted", 2, "deferred", None),
        ("replaced", 1, "deferred", "Replaced by level 2."),
        ("granted", 1, "deferred", None),
    ]
    assert announcements(tmp_path) == [
        ["ana", "active", "1", str(process.pid)],
        ["ended", "ana", "active", "1", str(process.pid)],
        ["ana", "active", "2", str(process.pid)],
        ["ended", "ana", "active", "2", str(process.pid)],
    ]


async def test_the_worker_publishes_the_notices_of_its_awards_and_expiries(
    app: BadgeRegistry, worker_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """A deferred award and the periodic expiry, made by a real worker, reach a subscriber of
    the app's stream."""
    app.register(WeeklyBadge)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=8)
    await app.possibly_award_badge("checked-in", user="bob", force_timestamp=old)
    record_visit("ana", datetime.date(2024, 5, 7))
    assert await app.possibly_award_badge("visited", user="ana") == []
    env = {**worker_env, "ABADGES_NOTICES_STREAM": app.settings.notices_stream}
    seen: list[tuple[str, str, str]] = []
    notices = app.subscribe(last_id="0")
    async with worker(env, tmp_path / "worker.log"):
        with anyio.fail_after(30):
            async for notice in notices:
                seen.append((notice.change, notice.award.user_id, notice.award.slug))
                if len(seen) == 4:
                    break
    await notices.aclose()
    assert seen[0] == ("granted", "bob", "weekly")  # The app's.
    assert sorted(seen[1:]) == [
        ("expired", "bob", "weekly"),
        ("granted", "ana", "regular"),
        ("granted", "ana", "visitor"),
    ]
    unseen = await app.unseen("ana")
    assert sorted(a.slug for a in unseen) == ["regular", "visitor"]
    assert {a.source for a in unseen} == {"deferred"}


async def test_the_shipped_worker_moves_expired_awards_to_the_history(
    registry: BadgeRegistry,
    worker_env: dict[str, str],
    stored_rows: Rows,
    tmp_path: pathlib.Path,
) -> None:
    """The periodic job runs when a worker starts, then every minute; two workers started
    together move each expired award once."""
    registry.register(WeeklyBadge)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=8)
    for user in ("ana", "bo", "cy"):
        await registry.possibly_award_badge("checked-in", user=user, force_timestamp=old)
    await registry.possibly_award_badge("checked-in", user="dee")  # Held for another week.
    assert await registry.badge_count("ana") == 0  # Expired already, before any job.

    async with worker(worker_env, tmp_path / "one.log"), worker(worker_env, tmp_path / "two.log"):
        with anyio.fail_after(30):
            while len(await stored_rows()) > 1:  # noqa: ASYNC110 - the workers write them
                await anyio.sleep(0.1)
    assert await stored_rows() == [("dee", "weekly", 1)]
    expired = [c for c in await registry.history() if c.action == "expired"]
    assert sorted(c.user_id for c in expired) == ["ana", "bo", "cy"]
    assert {c.at for c in expired} == {old + datetime.timedelta(days=7)}
    ended = [line[1] for line in announcements(tmp_path) if line[0] == "ended"]
    assert sorted(ended) == ["ana", "bo", "cy"]
    logs = (tmp_path / "one.log").read_text() + (tmp_path / "two.log").read_text()
    assert f"{registry.settings.queue_name}:abadges.expire()" in logs
    assert "Traceback" not in logs
