"""The worker side of deferred badges, with arq's `Worker` run in this process against the real
Redis and databases: exactly-once records, isolation, retries, bad payloads, outages."""

from __future__ import annotations

import datetime
import logging
import os
import pathlib
import pickle
import socket
import time
from typing import Any

import anyio
import anyio.abc
import databases
import pytest
import redis.asyncio
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.worker import Worker
from redis.exceptions import OutOfMemoryError, WatchError

import abadges._full_redis
import abadges.worker
from abadges import Award, Badge, BadgeAwarded, BadgeRegistry, ConfigurationError
from abadges._utils import obscure
from abadges.jobs import JOB_NAME, MAX_JOB_BYTES, dumps
from abadges.testing import RedisServer, free_port
from abadges.worker import health_key, live_workers, worker_settings
from tests.support import Rows, TcpProxy, fill_to_the_brim, push, queued_ids, queued_payloads
from tests.support.deferred_badges import VisitorBadge, WeeklyBadge


class SeenBadge(Badge):
    slug = "seen"
    levels = ["Seen"]
    events = ["visited"]
    deferred = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class FailingBadge(SeenBadge):
    slug = "failing"

    def award(self, **state: Any) -> BadgeAwarded:
        raise ValueError(f"no award for {state['user'].id}")


class FlakyBadge(SeenBadge):
    """Raises a connection error on its first `failures` calls."""

    slug = "flaky"
    failures = 1
    calls = 0

    def award(self, **state: Any) -> BadgeAwarded:
        type(self).calls += 1
        if type(self).calls <= type(self).failures:
            raise ConnectionResetError("connection reset by peer")
        return BadgeAwarded()


async def drain(registry: BadgeRegistry, **overrides: Any) -> Worker:
    """Run a worker of `registry`'s queue until the queue is empty."""
    settings = worker_settings(registry, burst=True, handle_signals=False, poll_delay=0.05)
    worker = Worker(**{**settings, **overrides})
    try:
        await worker.async_run()
    finally:
        if worker._pool is not None:
            # What Worker.close() would do, without its deprecated pool close() call.
            await worker.pool.delete(worker.health_check_key)
            await worker.pool.aclose()
    return worker


async def user_without(server: RedisServer, command: str) -> str:
    """The URL of a new user of `server` who may run every command but `command`."""
    client = redis.asyncio.Redis.from_url(server.url)
    await client.acl_setuser(
        "app", enabled=True, passwords=["+s3cret"], keys=["*"], channels=["*"],
        commands=["+@all", f"-{command}"],
    )  # fmt: skip
    await client.aclose()
    return f"redis://app:s3cret@127.0.0.1:{server.port}"


def envelope(payload: object, function: str = JOB_NAME) -> bytes:
    return dumps({"t": None, "f": function, "a": [payload], "k": {}, "et": int(time.time() * 1000)})


async def test_a_job_that_runs_twice_records_its_awards_once(
    registry: BadgeRegistry, redis_url: str, queue_name: str, stored_rows: Rows
) -> None:
    registry.register(VisitorBadge)
    registry.register(SeenBadge)
    announced: list[Award] = []
    registry.on_award(announced.append)
    assert await registry.possibly_award_badge("visited", user="ana") == []
    assert await registry.possibly_award_badge("visited", user="ana") == []
    [first_id, _] = await queued_ids(redis_url, queue_name)
    client = redis.asyncio.Redis.from_url(redis_url)
    first_job = await client.get(job_key_prefix + first_id)
    await client.aclose()
    assert first_job is not None

    worker = await drain(registry)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (2, 0, 0)
    expected = [("ana", "seen", 1), ("ana", "visitor", 1), ("ana", "visitor", 1)]
    assert sorted(await stored_rows()) == expected
    assert len(announced) == 3

    # arq is at-least-once: the same job again (a killed worker's job, re-run) adds nothing.
    await push(redis_url, queue_name, first_job)
    worker = await drain(registry)
    assert worker.jobs_complete == 1
    assert sorted(await stored_rows()) == expected
    assert len(announced) == 3


class EchoBadge(Badge):
    """Level 1 for state frozen on site "a", level 2 on any other."""

    slug = "echo"
    levels = ["A", "B"]
    events = ["visited"]
    deferred = True

    def freeze(self, **state: Any) -> dict[str, Any]:
        return {"site": state["site"]}

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded(level=1 if state["site"] == "a" else 2)


async def test_a_deferred_award_is_dated_when_its_event_happened(
    registry: BadgeRegistry, redis_url: str, queue_name: str
) -> None:
    registry.register(SeenBadge)
    before = datetime.datetime.now(datetime.UTC)
    await registry.possibly_award_badge("visited", user="ana")
    after = datetime.datetime.now(datetime.UTC)
    [payload] = await queued_payloads(redis_url, queue_name)
    await anyio.sleep(0.3)  # A backlog: the worker runs the job later.
    await drain(registry)
    [award] = await registry.awards_for("ana")
    assert before <= award.awarded_at <= after
    assert payload["at"] == award.awarded_at.isoformat()


async def test_two_queues_on_one_redis_never_take_each_others_jobs(
    registry: BadgeRegistry,
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    tmp_path: pathlib.Path,
) -> None:
    # Two sites share a Redis, each with its queue and its database; the same event, user and
    # event_key give their jobs the same key.
    registry.register(EchoBadge)
    other = BadgeRegistry()
    other.configure(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'other.sqlite3'}",
        redis_url=redis_url,
        queue_name=f"{queue_name}:other",
    )
    other.register(EchoBadge)
    async with other.lifespan():
        await other.migrate()
        await registry.possibly_award_badge("visited", user="ana", site="a", event_key="1001")
        await other.possibly_award_badge("visited", user="ana", site="b", event_key="1001")
        [mine] = await queued_ids(redis_url, queue_name)
        [theirs] = await queued_ids(redis_url, f"{queue_name}:other")
        assert mine != theirs
        assert (await drain(registry)).jobs_complete == 1
        assert (await drain(other)).jobs_complete == 1
        assert [(a.slug, a.level) for a in await other.awards_for("ana")] == [("echo", 2)]
    assert await stored_rows() == [("ana", "echo", 1)]


async def test_a_retried_event_key_queues_one_job_and_records_once(
    registry: BadgeRegistry,
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry.register(VisitorBadge)
    registry.register(SeenBadge)
    with caplog.at_level(logging.DEBUG, logger="abadges"):
        for _ in range(2):
            await registry.possibly_award_badge("visited", user="ana", event_key="req-1")
    [job_id] = await queued_ids(redis_url, queue_name)
    assert f"Job {job_id} of event 'visited' is queued already." in caplog.messages
    await drain(registry)
    expected = [("ana", "seen", 1), ("ana", "visitor", 1)]
    assert sorted(await stored_rows()) == expected

    # Retried after its job ran (arq keeps no result): the job runs again and adds nothing.
    await registry.possibly_award_badge("visited", user="ana", event_key="req-1")
    assert await queued_ids(redis_url, queue_name) == [job_id]
    worker = await drain(registry)
    assert worker.jobs_complete == 1
    assert sorted(await stored_rows()) == expected


async def test_a_failing_badge_is_logged_and_the_others_recorded(
    registry: BadgeRegistry,
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry.register(FailingBadge)
    registry.register(SeenBadge)
    await registry.possibly_award_badge("visited", user="ana")
    [job_id] = await queued_ids(redis_url, queue_name)
    with caplog.at_level(logging.ERROR, logger="abadges.worker"):
        worker = await drain(registry)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (1, 0, 0)
    assert await stored_rows() == [("ana", "seen", 1)]
    [record] = [r for r in caplog.records if r.name == "abadges.worker"]
    assert record.getMessage() == (
        f"Job {job_id} failed and is not retried: ValueError: no award for ana "
        "(Raised by deferred badge 'failing' on event 'visited'.)"
    )
    assert record.exc_info is not None


async def test_connection_errors_are_retried_with_backoff(
    registry: BadgeRegistry,
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    FlakyBadge.calls, FlakyBadge.failures = 0, 1
    registry.register(FlakyBadge)
    registry.register(VisitorBadge)
    await registry.possibly_award_badge("visited", user="ana")
    [job_id] = await queued_ids(redis_url, queue_name)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="abadges.worker"):
        worker = await drain(registry)
    assert time.monotonic() - started >= 1
    assert (worker.jobs_complete, worker.jobs_retried) == (1, 1)
    assert FlakyBadge.calls == 2
    # The visitor award of the first try is not recorded again by the second.
    assert sorted(await stored_rows()) == [("ana", "flaky", 1), ("ana", "visitor", 1)]
    assert [r.getMessage() for r in caplog.records if r.name == "abadges.worker"] == [
        f"Job {job_id} hit a connection error (try 1): ConnectionResetError: connection reset "
        "by peer (Raised by deferred badge 'flaky' on event 'visited'.); retrying in 1s."
    ]


async def test_retries_are_bounded(
    registry: BadgeRegistry,
    queue_name: str,
    stored_rows: Rows,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("abadges.worker.BACKOFF_CAP", 0)
    FlakyBadge.calls, FlakyBadge.failures = 0, 100
    registry.register(FlakyBadge)
    await registry.possibly_award_badge("visited", user="ana")
    with caplog.at_level(logging.WARNING):
        worker = await drain(registry, max_tries=3)
    assert (worker.jobs_failed, worker.jobs_retried, FlakyBadge.calls) == (1, 3, 3)
    assert "max retries 3 exceeded" in caplog.text
    assert await stored_rows() == []


async def test_bad_payloads_are_rejected_and_the_worker_goes_on(
    registry: BadgeRegistry,
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    caplog: pytest.LogCaptureFixture,
    tmp_path: pathlib.Path,
) -> None:
    target = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (pathlib.Path.touch, (target,))

    registry.register(SeenBadge)
    valid = {"v": 1, "key": "k" * 32, "event": "visited", "user": "ana", "at": None}
    await push(redis_url, queue_name, b"\x00garbage\xff")
    await push(redis_url, queue_name, pickle.dumps({"f": JOB_NAME, "a": [Exploit()]}))
    await push(redis_url, queue_name, envelope({**valid, "v": 2, "badges": {"seen": {}}}))
    await push(redis_url, queue_name, envelope({**valid, "badges": {"seen": {}}}, "os.system"))
    await push(redis_url, queue_name, b'"' + b"x" * MAX_JOB_BYTES + b'"')
    await registry.possibly_award_badge("visited", user="bob")

    with caplog.at_level(logging.INFO):
        worker = await drain(registry)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 5)
    assert await stored_rows() == [("bob", "seen", 1)]
    assert not target.exists()
    for message in [
        "Job payload is not JSON",
        "Job payload starts with b'\\x80\\x04', a pickle; abadges jobs are JSON and pickle is "
        "never loaded.",
        "InvalidJobError: Job payload version 2 is not supported; this abadges reads version 1.",
        "function 'os.system' not found",
        f"Job payload is {MAX_JOB_BYTES + 2} bytes, over the {MAX_JOB_BYTES}-byte limit",
    ]:
        assert message in caplog.text


async def test_a_poison_job_makes_a_few_bounded_log_lines(
    registry: BadgeRegistry,
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Many badges registered, a job naming thousands the worker does not know and failing in
    # many it does: each failure listed every registered slug, with a traceback.
    for number in range(40):
        registry.register(type(f"Failing{number}", (FailingBadge,), {"slug": f"failing-{number}"}))
    registry.register(SeenBadge)
    states: dict[str, dict[str, Any]] = {f"unknown-{number}": {} for number in range(5000)}
    states.update({f"failing-{number}": {} for number in range(40)}, seen={})
    payload = {"v": 1, "key": "p" * 32, "event": "visited", "user": "ana", "at": None}
    await push(redis_url, queue_name, envelope({**payload, "badges": states}))
    with caplog.at_level(logging.INFO, logger="abadges.worker"):
        await drain(registry, max_tries=1)
    assert await stored_rows() == [("ana", "seen", 1)]
    lines = [r for r in caplog.records if r.getMessage().startswith("Job ")]
    assert len(lines) == 12
    assert sum(len(r.getMessage()) for r in lines) < 10_000
    assert lines[-2].getMessage().endswith(": 30 more badges failed and are not retried.")
    assert lines[-1].getMessage().endswith("and 4999 more; retrying in 1s.")
    assert "registered slugs: ['failing-0', 'failing-1', 'failing-10', " in lines[-1].getMessage()
    assert "and 31 more." in lines[-1].getMessage()


async def test_a_worker_refuses_a_redis_that_may_evict_its_jobs(
    database_url: str, redis_server: RedisServer, queue_name: str, stored_rows: Rows
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.config_set("maxmemory-policy", "volatile-lru")
    await client.aclose()
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, redis_url=redis_server.url, queue_name=queue_name)
    registry.register(SeenBadge)
    with pytest.raises(ConfigurationError) as caught:
        await drain(registry)
    assert str(caught.value) == (
        f"Redis at {redis_server.url} has maxmemory-policy 'volatile-lru': when it fills up it "
        "evicts keys, queued jobs among them, and their awards are lost without a word. Set "
        "maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in "
        "redis.conf), or give abadges a Redis of its own that does not evict."
    )


async def test_the_app_warns_once_about_an_evicting_redis_and_queues_without_a_ttl(
    registry: BadgeRegistry, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.config_set("maxmemory-policy", "allkeys-lru")
    await registry.disconnect()
    registry.configure(redis_url=redis_server.url)
    registry.register(SeenBadge)
    async with registry.lifespan():
        with caplog.at_level(logging.WARNING, logger="abadges"):
            await registry.possibly_award_badge("visited", user="ana")
            await registry.possibly_award_badge("visited", user="bob")
        [job_id, _] = await queued_ids(redis_server.url, registry.settings.queue_name)
    # Queued data never expires, so no policy evicts it as "volatile" first.
    assert await client.ttl(job_key_prefix + job_id) == -1
    await client.aclose()
    warnings = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert warnings == [
        f"Redis at {redis_server.url} has maxmemory-policy 'allkeys-lru': when it fills up it "
        "evicts keys, queued jobs among them, and their awards are lost without a word. Set "
        "maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in "
        "redis.conf), or give abadges a Redis of its own that does not evict."
    ]


async def test_a_redis_that_refuses_config_is_warned_about(
    database_url: str,
    redis_server: RedisServer,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A user without CONFIG, as on managed services that disable it.
    url = await user_without(redis_server, "config")
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, redis_url=url, queue_name=queue_name)
    registry.register(SeenBadge)
    async with registry.lifespan():  # A burst worker leaves the registry connected.
        with caplog.at_level(logging.WARNING, logger="abadges.worker"):
            await drain(registry)
    [warning] = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert warning.startswith(
        f"Could not read the maxmemory-policy of Redis at redis://app:***@127.0.0.1:"
        f"{redis_server.port} (NoPermissionError: "
    )
    assert warning.endswith(
        "make sure it is noeviction, or queued jobs may be evicted and their awards lost "
        "without a word."
    )


async def behind_a_proxy(
    task_group: anyio.abc.TaskGroup, database_url: str, redis_url: str, queue_name: str
) -> tuple[TcpProxy, BadgeRegistry]:
    """A registry with VisitorBadge whose database is reached through a proxy a test can stop."""
    url = databases.DatabaseURL(database_url)
    proxy = TcpProxy(task_group, url.port or 5432)
    await proxy.start()
    registry = BadgeRegistry()
    registry.configure(
        database_url=str(url.replace(port=proxy.port)), redis_url=redis_url, queue_name=queue_name
    )
    registry.register(VisitorBadge)
    return proxy, registry


async def start_later(proxy: TcpProxy) -> None:
    """The database comes back half a second later."""
    await anyio.sleep(0.5)
    await proxy.start()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_database_outage_is_retried_until_the_database_returns(
    database_url: str, redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with anyio.create_task_group() as task_group:
        proxy, registry = await behind_a_proxy(task_group, database_url, redis_url, queue_name)
        async with registry.lifespan():
            await registry.create_tables()
            # A user of its own: this test does not clear the table other tests write to.
            await registry.possibly_award_badge("visited", user="outage")
            proxy.stop()
            task_group.start_soon(start_later, proxy)
            with caplog.at_level(logging.WARNING, logger="abadges.worker"):
                worker = await drain(registry)
            assert worker.jobs_complete == 1
            assert worker.jobs_retried >= 1
            assert "hit a connection error (try 1)" in caplog.text
            assert [a.slug for a in await registry.awards_for("outage")] == ["visitor"]
        proxy.stop()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_worker_started_during_an_outage_waits_for_the_database(
    database_url: str, redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with anyio.create_task_group() as task_group:
        proxy, registry = await behind_a_proxy(task_group, database_url, redis_url, queue_name)
        async with registry.lifespan():
            await registry.create_tables()
            await registry.possibly_award_badge("visited", user="late-worker")
        proxy.stop()
        task_group.start_soon(start_later, proxy)
        with caplog.at_level(logging.WARNING, logger="abadges.worker"):
            worker = await drain(registry)
        assert worker.jobs_complete == 1
        assert "The database is unreachable (ConnectionRefusedError: " in caplog.text
        assert "connecting again in 0.1s." in caplog.text
        async with registry.lifespan():
            assert [a.slug for a in await registry.awards_for("late-worker")] == ["visitor"]
        proxy.stop()


async def test_a_worker_gives_up_on_a_database_that_stays_down(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(abadges.worker, "DATABASE_WAIT", 0.3)
    registry = BadgeRegistry()
    registry.configure(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test",
        redis_url=redis_url,
    )
    registry.register(SeenBadge)
    started = time.monotonic()
    with pytest.raises(OSError):
        await drain(registry)
    assert time.monotonic() - started < 5


async def test_startup_names_a_badge_module_it_cannot_import(
    database_url: str, redis_url: str
) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, redis_url=redis_url, badges="no_such_badges")
    with pytest.raises(ConfigurationError) as caught:
        await drain(registry)
    assert str(caught.value).startswith(
        "ABADGES_BADGES names module 'no_such_badges', which cannot be imported"
    )


async def test_a_user_loader_error_fails_the_job_without_retries(
    registry: BadgeRegistry, stored_rows: Rows, caplog: pytest.LogCaptureFixture
) -> None:
    registry.register(SeenBadge)
    await registry.possibly_award_badge("visited", user="gone")
    await registry.disconnect()
    registry.configure(user_loader=missing_user)
    await registry.connect()
    with caplog.at_level(logging.ERROR):
        worker = await drain(registry)
    assert (worker.jobs_failed, worker.jobs_retried) == (1, 0)
    assert "abadges.award failed, LookupError: no user 'gone'" in caplog.text
    assert await stored_rows() == []


def missing_user(user_id: str) -> Any:
    raise LookupError(f"no user {user_id!r}")


async def test_startup_reports_a_broken_badge_module_as_it_is(
    database_url: str, redis_url: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_badges.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(tmp_path)
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, redis_url=redis_url, badges="broken_badges")
    with pytest.raises(ModuleNotFoundError, match="No module named 'no_such_dependency'"):
        await drain(registry)


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        (
            "",
            "The worker has no badge to run: ABADGES_BADGES is not set. Set "
            "ABADGES_BADGES to the comma-separated modules that register your badges, as the "
            "app imports them.",
        ),
        (
            "inline_badges",
            "The worker has no badge to run: the modules ABADGES_BADGES names "
            "(inline_badges) register none. Set ABADGES_BADGES",
        ),
    ],
)
async def test_startup_refuses_a_worker_without_badges(
    database_url: str,
    redis_url: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    modules: str,
    message: str,
) -> None:
    # A module that registers no badge (the default registry, which the example apps use in
    # this process, stays as it is).
    (tmp_path / "inline_badges.py").write_text('"""Only inline badges, registered elsewhere."""\n')
    monkeypatch.syspath_prepend(tmp_path)
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, redis_url=redis_url, badges=modules)
    with pytest.raises(ConfigurationError) as caught:
        await drain(registry)
    assert str(caught.value).startswith(message)
    assert registry._connection is None


async def test_startup_refuses_the_default_database_file_when_it_is_missing(
    redis_url: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABADGES_DATABASE_URL", raising=False)
    registry = BadgeRegistry()
    registry.configure(redis_url=redis_url)
    registry.register(SeenBadge)
    with pytest.raises(ConfigurationError) as caught:
        await drain(registry)
    assert str(caught.value) == (
        "The worker's database is the default sqlite+aiosqlite:///abadges.sqlite3, and "
        f"{tmp_path / 'abadges.sqlite3'} does not exist: set ABADGES_DATABASE_URL to the "
        "database the app records awards in."
    )
    assert not (tmp_path / "abadges.sqlite3").exists()


async def test_startup_logs_what_the_worker_runs_on_without_passwords(
    database_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = BadgeRegistry()
    # A burst worker does not talk to Redis at start-up, so any password will do.
    registry.configure(
        database_url=database_url,
        redis_url="redis://:s3cret@127.0.0.1:6379/0",
        queue_name=queue_name,
    )
    registry.register(SeenBadge)
    registry.register(VisitorBadge)
    settings = worker_settings(registry, burst=True, handle_signals=False)
    with caplog.at_level(logging.INFO, logger="abadges.worker"):
        await settings["on_startup"]({})
    await settings["on_shutdown"]({})
    [line] = [r.getMessage() for r in caplog.records if r.name == "abadges.worker"]
    assert line.startswith(f"abadges worker {os.getpid()} on {socket.gethostname()}: database ")
    assert line.endswith(
        f", Redis redis://:***@127.0.0.1:6379/0, queue {queue_name!r}, badge modules [], "
        "deferred badges ['seen', 'visitor'], expiring badges []."
    )
    assert "s3cret" not in line


def test_the_password_of_a_url_is_obscured() -> None:
    assert obscure("redis://:p%40ss@host:6379/0") == "redis://:***@host:6379/0"
    assert (
        obscure("postgresql+asyncpg://app:secret@db/app") == "postgresql+asyncpg://app:***@db/app"
    )
    assert obscure("redis://host:6379") == "redis://host:6379"
    assert obscure("redis:/:pw@host") == "redis::***@host"
    assert obscure("pw@host") == "***@host"
    assert obscure("http://:p@ss/w:rd@host") == "http://:***@host"
    assert obscure("rediss://host?ssl_password=k3y&db=1") == "rediss://host?ssl_password=***&db=1"


async def test_a_heartbeat_that_cannot_reach_redis_is_logged_and_goes_on(
    database_url: str,
    redis_server: RedisServer,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, redis_url=redis_server.url, queue_name=queue_name)
    registry.register(SeenBadge)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    settings = worker_settings(registry, health_interval=0.05)
    ctx: dict[str, Any] = {"redis": client}
    try:
        await settings["on_startup"](ctx)
        await redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="abadges.worker"):
            await anyio.sleep(0.3)
        assert "Could not refresh the health key abadges:worker:" in caplog.text
        await redis_server.start()
        await anyio.sleep(0.2)  # It beats again once Redis is back.
        assert len(await live_workers(redis_server.url, queue_name)) == 1
        await settings["on_shutdown"](ctx)
    finally:
        await client.aclose()


async def test_the_hooks_wrap_the_users_own(
    database_url: str, redis_url: str, queue_name: str
) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, redis_url=redis_url, queue_name=queue_name)
    registry.register(SeenBadge)
    started: list[str] = []

    async def on_startup(ctx: dict[str, Any]) -> None:
        assert registry._connection is not None
        started.append("user startup")

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        assert registry._connection is not None
        started.append("user shutdown")

    client = redis.asyncio.Redis.from_url(redis_url)
    settings = worker_settings(registry, on_startup=on_startup, on_shutdown=on_shutdown)
    ctx: dict[str, Any] = {"redis": client}
    try:
        await settings["on_startup"](ctx)
        assert [w["pid"] for w in await live_workers(redis_url, queue_name)] == [os.getpid()]
        await settings["on_shutdown"](ctx)
        assert started == ["user startup", "user shutdown"]
        assert registry._connection is None
        # The health key went with the worker.
        assert await live_workers(redis_url, queue_name) == []
    finally:
        await client.aclose()


async def test_a_worker_drains_a_full_redis(
    registry: BadgeRegistry,
    redis_server: RedisServer,
    stored_rows: Rows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await registry.disconnect()
    registry.configure(redis_url=redis_server.url)
    registry.register(VisitorBadge)
    FlakyBadge.calls, FlakyBadge.failures = 0, 1
    registry.register(FlakyBadge)  # Its first job is retried, while Redis is full.
    async with registry.lifespan():
        queued = await fill_to_the_brim(registry, "visited")
        with caplog.at_level(logging.WARNING, logger="abadges.worker"):
            worker = await drain(registry)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (queued, 0, 1)
    users = [f"u{n}" for n in range(queued)]
    expected = [(user, slug, 1) for user in users for slug in ("flaky", "visitor")]
    assert sorted(await stored_rows()) == sorted(expected)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    assert [key async for key in client.scan_iter(match="arq:*")] == []
    await client.aclose()
    messages = [r.getMessage() for r in caplog.records if r.name == "abadges.worker"]
    assert [m for m in messages if "Redis at" in m] == [
        f"Redis at {redis_server.url} is out of memory (maxmemory reached, noeviction): it "
        "refuses new jobs. The worker goes on draining the queue, which frees memory; its "
        "bookkeeping (claims, try counts, health keys: a few dozen bytes a running job) goes "
        "past maxmemory.",
        f"Redis at {redis_server.url} has room again: the worker's writes are within maxmemory.",
    ]


async def test_only_the_workers_bookkeeping_goes_past_maxmemory(
    redis_server: RedisServer, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    pool = ArqRedis.from_url(redis_server.url)
    pool.default_queue_name = queue_name
    abadges._full_redis.adopt(pool, redis_server.url)
    assert type(pool) is abadges._full_redis.WorkerRedis
    claim = in_progress_key_prefix + "job"
    try:
        await client.config_set("maxmemory", 1)  # Every write is refused.
        with caplog.at_level(logging.WARNING, logger="abadges.worker"):
            # What is not bookkeeping is refused, in a transaction or not.
            with pytest.raises(OutOfMemoryError):
                await pool.set("mine", "x")
            async with pool.pipeline(transaction=True) as pipe:
                pipe.get(claim)
                pipe.set("mine", "x")
                with pytest.raises(OutOfMemoryError):
                    await pipe.execute()
            # A health key goes past maxmemory, but not outside a transaction: the commands
            # of a plain pipeline that Redis took must not run twice.
            assert await pool.set(health_key(queue_name), "{}", px=10_000)
            async with pool.pipeline(transaction=False) as pipe:
                pipe.set(health_key(queue_name), "{}", px=10_000)
                with pytest.raises(OutOfMemoryError):
                    await pipe.execute()
            # A claim is made once, as WATCH makes it; a WATCH of anything else is refused.
            for expected in ([True, None, 1], WatchError):
                async with pool.pipeline(transaction=True) as pipe:
                    await pipe.watch(claim)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.psetex(claim, 10_000, b"1")
                    pipe.get("absent")
                    pipe.incr("arq:retry:job")
                    if expected is WatchError:
                        with pytest.raises(WatchError):
                            await pipe.execute()
                    else:
                        assert await pipe.execute() == expected
            async with pool.pipeline(transaction=True) as pipe:
                await pipe.watch("mine")
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.delete("mine")
                with pytest.raises(OutOfMemoryError):
                    await pipe.execute()
            await client.config_set("maxmemory", 0)
            async with pool.pipeline(transaction=True) as pipe:
                pipe.delete(claim)
                assert await pipe.execute() == [1]
            async with pool.pipeline(transaction=True) as pipe:
                pipe.delete(claim)
                assert await pipe.execute() == [0]
            # Full again, and room again, within FULL_WARNING_INTERVAL: neither is logged.
            for maxmemory in (1, 0):
                await client.config_set("maxmemory", maxmemory)
                async with pool.pipeline(transaction=True) as pipe:
                    pipe.delete(claim)
                    assert await pipe.execute() == [0]
    finally:
        await client.config_set("maxmemory", 0)
        await client.aclose()
        await pool.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "is out of memory" in messages[0]
    assert "has room again" in messages[1]

    # A pool of another class is left as it is.
    class Mine(ArqRedis):
        pass

    mine = Mine.from_url(redis_server.url)
    abadges._full_redis.adopt(mine, redis_server.url)
    assert type(mine) is Mine
    await mine.aclose()


async def test_a_redis_that_refuses_the_script_keeps_the_refusal(
    redis_server: RedisServer, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis 6 cannot run the script (it has no allow-oom flag); a user without EVAL neither.
    url = await user_without(redis_server, "eval")
    client = redis.asyncio.Redis.from_url(redis_server.url)
    pool = ArqRedis.from_url(url)
    pool.default_queue_name = queue_name
    abadges._full_redis.adopt(pool, url)
    try:
        await client.config_set("maxmemory", 1)
        with caplog.at_level(logging.WARNING, logger="abadges.worker"):
            for _ in range(2):
                with pytest.raises(OutOfMemoryError) as caught:
                    await pool.set(health_key(queue_name), "{}", px=10_000)
                assert isinstance(caught.value.__cause__, redis.exceptions.NoPermissionError)
    finally:
        await client.config_set("maxmemory", 0)
        await client.aclose()
        await pool.aclose()
    [full, refused] = [r.getMessage() for r in caplog.records]
    assert full.startswith("Redis at redis://app:***@127.0.0.1:")
    assert refused.startswith(
        f"Redis at redis://app:***@127.0.0.1:{redis_server.port} refused the worker's script "
        "past maxmemory (NoPermissionError: "
    )
    assert refused.endswith(
        "): the worker cannot drain a full Redis, which needs Redis 7 and EVAL. Jobs stay "
        "queued until memory is freed."
    )


async def test_a_job_waits_for_the_migration_it_needs(
    tmp_path: pathlib.Path, redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that runs before the database is migrated retries its jobs on SchemaError;
    before, the job was logged and dropped at once."""
    registry = BadgeRegistry()
    registry.register(VisitorBadge)
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'abadges.sqlite3'}"
    registry.configure(database_url=database_url, redis_url=redis_url, queue_name=queue_name)
    async with registry.lifespan():
        assert await registry.possibly_award_badge("visited", user="ana") == []  # Queued only.

        async def migrate_after_the_first_try() -> None:
            with anyio.fail_after(10):
                while "met a fault of the deployment" not in caplog.text:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            await registry.migrate()

        with caplog.at_level(logging.WARNING, logger="abadges.worker"):
            async with anyio.create_task_group() as group:
                group.start_soon(migrate_after_the_first_try)
                worker = await drain(registry)
        assert (worker.jobs_complete, worker.jobs_retried) == (1, 1)
        assert [a.slug for a in await registry.awards_for("ana")] == ["visitor"]
    assert "SchemaError: The table 'abadges_awards' does not exist" in caplog.text


async def test_a_full_redis_defers_the_expiry_job_to_the_next_minute(
    redis_server: RedisServer, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """arq queues its cron jobs in its poll loop, which an error would end: on a full Redis the
    expiry waits, and the worker goes on draining; other jobs are refused as before."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    pool = ArqRedis.from_url(redis_server.url)
    pool.default_queue_name = queue_name
    abadges._full_redis.adopt(pool, redis_server.url)
    expiry = f"{queue_name}:abadges.expire"
    try:
        assert await pool.enqueue_job(expiry, _job_id=f"{expiry}:1") is not None
        await client.config_set("maxmemory", 1)  # Every write is refused.
        with caplog.at_level(logging.WARNING, logger="abadges.worker"):
            assert await pool.enqueue_job(expiry, _job_id=f"{expiry}:2") is None
            with pytest.raises(OutOfMemoryError):
                await pool.enqueue_job(JOB_NAME, {"v": 1})
    finally:
        await client.config_set("maxmemory", 0)
        await client.aclose()
        await pool.aclose()
    assert [r.getMessage() for r in caplog.records] == [
        f"Redis at {redis_server.url} is full: the periodic job {expiry} waits for the next minute."
    ]


async def test_the_expiry_job_moves_what_expired(registry: BadgeRegistry) -> None:
    """The cron job's function, as a worker runs it; `burst` workers run none."""
    registry.register(WeeklyBadge)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=8)
    await registry.possibly_award_badge("checked-in", user="ana", force_timestamp=old)
    ctx = {abadges.worker.REGISTRY: registry}
    assert await abadges.worker.expire(ctx) == 1
    assert await abadges.worker.expire(ctx) == 0
    [cron] = worker_settings(registry)["cron_jobs"]
    assert (cron.name, cron.run_at_startup) == (
        f"{registry.settings.queue_name}:abadges.expire",
        True,
    )
    assert worker_settings(registry, burst=True)["cron_jobs"] == []
