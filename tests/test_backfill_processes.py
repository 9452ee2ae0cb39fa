"""Backfills in real processes: a run killed with SIGKILL and resumed from its checkpoint,
deferred batches on real `arq` workers (one of them killed mid-batch), and `abadges backfill`
in a pipe, on a terminal and stopped with Ctrl-C.

Every run is compared with a clean run of the same users on a fresh database: the awards, and
the history's "granted" rows, must be exactly those, once each. The badges and users are in
`tests/support/backfill_badges.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import databases
import pytest
import redis.asyncio
import sqlalchemy as sa

from abadges import BackfillJobError, BackfillReport, BadgeRegistry
from abadges.tables import awards, backfills, history
from abadges.worker import live_workers
from tests.support import worker
from tests.support.backfill_badges import BADGES, user_ids

ROOT = pathlib.Path(__file__).parent.parent
ABADGES = str(pathlib.Path(sys.executable).parent / "abadges")
USERS_FUNCTION = "tests.support.backfill_badges:users"
#: The badge module of the worker and command processes.
BADGE_MODULE = "tests.support.backfill_worker"
QUICK_RETRY = "tests.support.backfill_worker.QuickRetrySettings"

Row = tuple[str, str, int, str]


def text(value: str | bytes) -> str:
    # The MySQL columns are VARBINARY (see abadges/tables.py) and come back as bytes.
    return value.decode() if isinstance(value, bytes) else value


def process_env(**settings: str) -> dict[str, str]:
    """This process's environment for a child, without the settings of abadges and the
    terminal's from outside (the variables of coverage.py stay: the children are measured)."""
    outside = ("ABADGES_", "FORCE_COLOR", "NO_COLOR", "TTY_", "COLUMNS", "TERM")
    env = {k: v for k, v in os.environ.items() if not k.startswith(outside)}
    # The session's stream of notices (tests/conftest.py), which it deletes at its end.
    env["ABADGES_NOTICES_STREAM"] = os.environ["ABADGES_NOTICES_STREAM"]
    return {**env, "PYTHONPATH": str(ROOT), **settings}


async def abadges(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """`abadges ARGS` run as the installed script."""
    with anyio.fail_after(60):
        return await anyio.run_process([ABADGES, *args], env=env, cwd=ROOT, check=False)


@dataclasses.dataclass
class Tables:
    """What a database holds after a backfill, sorted: its awards, and its history's "granted"
    rows, as (user_id, slug, level, source)."""

    awards: list[Row]
    granted: list[Row]


async def read_tables(database_url: str) -> Tables:
    """Read through a connection of its own, which sees only what is committed."""
    database = databases.Database(database_url)
    await database.connect()
    try:
        award_rows = await database.fetch_all(
            sa.select(awards.c.user_id, awards.c.slug, awards.c.level, awards.c.source)
        )
        granted_rows = await database.fetch_all(
            sa.select(history.c.user_id, history.c.slug, history.c.level, history.c.source).where(
                history.c.action == "granted"
            )
        )
    finally:
        await database.disconnect()

    def rows(found: list[Any]) -> list[Row]:
        return sorted((text(r[0]), text(r[1]), int(r[2]), r[3]) for r in found)

    return Tables(rows(award_rows), rows(granted_rows))


async def saved_position(database_url: str, name: str) -> int | None:
    """The position of the checkpoint `name` in abadges_backfills; None when there is none."""
    database = databases.Database(database_url)
    await database.connect()
    try:
        query = sa.select(backfills.c.position).where(backfills.c.name == name)
        row = await database.fetch_one(query)
    finally:
        await database.disconnect()
    return None if row is None else int(row[0])


def counts(report: dict[str, Any]) -> dict[str, Any]:
    """A report's data (`to_dict()`) without its time."""
    return {key: value for key, value in report.items() if key != "seconds"}


@contextlib.asynccontextmanager
async def fresh_database(database_url: str, tmp_path: pathlib.Path) -> AsyncIterator[str]:
    """An empty database next to `database_url`'s, on the same server (a new SQLite file),
    migrated; a server's is dropped afterwards."""
    url = databases.DatabaseURL(database_url)
    name = f"abadges_test_{uuid.uuid4().hex[:12]}"
    if url.dialect == "sqlite":
        yield await migrated(f"sqlite+aiosqlite:///{tmp_path / f'{name}.sqlite3'}")
        return
    admin = databases.Database(database_url)
    await admin.connect()
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield await migrated(str(url.replace(database=name)))
        finally:
            force = " WITH (FORCE)" if url.dialect == "postgresql" else ""
            await admin.execute(f"DROP DATABASE {name}{force}")
    finally:
        await admin.disconnect()


async def migrated(database_url: str) -> str:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url)
    async with registry.lifespan():
        await registry.migrate()
    return database_url


@dataclasses.dataclass
class CleanRun:
    report: dict[str, Any]
    tables: Tables


async def clean_run(database_url: str, tmp_path: pathlib.Path, count: int) -> CleanRun:
    """One backfill of `count` users in this process, on a fresh database of the backend of
    `database_url`, without a checkpoint, a worker or a fault."""
    async with fresh_database(database_url, tmp_path) as url:
        registry = BadgeRegistry()
        registry.configure(database_url=url, queue="inline")
        for badge_class in BADGES:
            registry.register(badge_class)
        async with registry.lifespan():
            report = await registry.backfill(user_ids(count), batch_size=50)
        clean = CleanRun(counts(report.to_dict()), await read_tables(url))
    # No run goes without awards of every kind, nor holds one twice.
    assert {slug for _, slug, _, _ in clean.tables.awards} == {"member", "tally", "tier", "rank"}
    assert len(set(clean.tables.awards)) == len(clean.tables.awards)
    assert clean.tables.granted == clean.tables.awards
    return clean


def assert_same_as(clean: CleanRun, tables: Tables) -> None:
    """Nothing lost, nothing doubled: the same awards, each granted once in the history."""
    assert len(set(tables.awards)) == len(tables.awards), "an award is held twice"
    assert tables.awards == clean.tables.awards
    assert tables.granted == clean.tables.granted
    assert {source for *_, source in tables.awards} == {"backfill"}


# 1. SIGKILL, then a run with the same checkpoint ---------------------------------------------

KILLED_USERS = 120


async def test_a_backfill_killed_midway_resumes_at_its_checkpoint_and_ends_as_a_clean_run(
    registry: BadgeRegistry, database_url: str, tmp_path: pathlib.Path
) -> None:
    """The killed run is stuck in batch 3 (u0035 never returns) while its other task writes
    batches 4, 5, ...: its checkpoint stays at 30 users, the end of batch 2, and the run
    started again evaluates the batches written after it once more. Guards the checkpoint:
    a position saved past a batch not written, not saved, or not deleted at the end, a run
    that starts over, and a re-run that records an award twice (a multiple badge's award
    under a new key, a history row written again), each fail it."""
    name = f"killed-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "tests.support.backfill_child", database_url]
    command += [str(KILLED_USERS), name]
    # 50 ms a user: batches of 10, two at a time, about half a second each.
    slow = process_env(ABADGES_TEST_BACKFILL_DELAY="0.05", ABADGES_TEST_STALL_USER="u0035")
    child = await anyio.open_process(command, env=slow, cwd=ROOT)

    async def batch_5_written() -> bool:  # Once it is, batch 4's position would be saved.
        return ("u0050", "member", 1, "backfill") in (await read_tables(database_url)).awards

    try:
        with anyio.fail_after(30):
            while not await saved_position(database_url, name) or not await batch_5_written():
                assert child.returncode is None, "the child ended before it was killed"
                await anyio.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == -signal.SIGKILL
    assert await saved_position(database_url, name) == 30
    at_kill = await read_tables(database_url)

    done = await anyio.run_process(command, env=process_env(), cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert (report["resumed"], report["users"]) == (30, KILLED_USERS - 30)
    assert (report["failed"], report["errors"]) == (0, [])
    assert await saved_position(database_url, name) is None

    clean = await clean_run(database_url, tmp_path, KILLED_USERS)
    assert_same_as(clean, await read_tables(database_url))
    # What the killed run had written was not granted again: the resumed run granted exactly
    # what was missing.
    assert len(at_kill.awards) + report["granted"] == clean.report["granted"]


# 2. Deferred batches on real workers ---------------------------------------------------------


@pytest.fixture
def worker_env(
    database_url: str, redis_url: str, queue_name: str, tmp_path: pathlib.Path
) -> dict[str, str]:
    return process_env(
        ABADGES_DATABASE_URL=database_url,
        ABADGES_REDIS_URL=redis_url,
        ABADGES_QUEUE_NAME=queue_name,
        ABADGES_BADGES=BADGE_MODULE,
        ABADGES_TEST_STATE_DIR=str(tmp_path),
    )


@pytest.fixture
def app(registry: BadgeRegistry) -> BadgeRegistry:
    """The registry of the run that sends the batches, with the workers' badges."""
    for badge_class in BADGES:
        registry.register(badge_class)
    return registry


async def wait_for_live(redis_url: str, queue_name: str, pids: set[int]) -> None:
    with anyio.fail_after(20):
        while {w["pid"] for w in await live_workers(redis_url, queue_name)} != pids:  # noqa: ASYNC110 - the workers write their health keys
            await anyio.sleep(0.1)


def started_batches(*logs: pathlib.Path) -> list[str]:
    """The backfill jobs the workers started, as arq logs them ("→ <id>:abadges.backfill(")."""
    lines = "\n".join(log.read_text() for log in logs).splitlines()
    return [line for line in lines if "→" in line and ":abadges.backfill(" in line]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_abadges_backfill_deferred_on_two_workers_reports_what_one_process_does(
    app: BadgeRegistry,
    worker_env: dict[str, str],
    database_url: str,
    redis_url: str,
    queue_name: str,
    tmp_path: pathlib.Path,
) -> None:
    """Guards the batches' round trip through the workers: a batch lost, run twice, or its
    report added twice or not at all, makes the report or the awards differ from the run in
    one process."""
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    async with (
        worker(worker_env, logs[0], "abadges.worker.WorkerSettings") as first,
        worker(worker_env, logs[1], "abadges.worker.WorkerSettings") as second,
    ):
        await wait_for_live(redis_url, queue_name, {first.pid, second.pid})
        command = [ABADGES, "backfill", "--users", USERS_FUNCTION, "--deferred", "--json"]
        command += ["--batch-size", "10", "--concurrency", "4"]
        with anyio.fail_after(60):
            done = await anyio.run_process(
                command, env={**worker_env, "ABADGES_TEST_USERS": "60"}, check=False
            )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""  # --json: no progress lines.
    clean = await clean_run(database_url, tmp_path, 60)
    assert counts(json.loads(done.stdout)) == clean.report
    assert_same_as(clean, await read_tables(database_url))
    assert len(started_batches(*logs)) == 6  # Each batch ran once.


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(
    app: BadgeRegistry,
    worker_env: dict[str, str],
    database_url: str,
    tmp_path: pathlib.Path,
) -> None:
    """The worker running u0025's batch is killed once that batch's awards are committed and
    before its report is sent (its on_award callback hangs): arq runs the batch again on the
    other worker, 12 s later, which records nothing twice. Guards the idempotence of a batch's
    writes and the run's wait for a batch re-run: a double award, a lost batch, or a run that
    gives up or hangs fails it. (It needs the killed job's in-progress key to expire after
    job_timeout + 10 s, here 12 s: a longer timeout of the backfill job would make it time
    out.)"""
    env = {**worker_env, "ABADGES_TEST_HANG_USER": "u0025"}
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    reports: list[BackfillReport] = []
    async with (
        worker(env, logs[0], QUICK_RETRY) as first,
        worker(env, logs[1], QUICK_RETRY) as second,
        anyio.create_task_group() as group,
    ):

        async def run() -> None:
            backfill = app.backfill(user_ids(60), deferred=True, batch_size=10, concurrency=3)
            reports.append(await backfill)

        group.start_soon(run)
        marker = tmp_path / "hung"
        with anyio.fail_after(20):
            while not marker.exists() or not marker.read_text():  # noqa: ASYNC110 - a worker writes it
                await anyio.sleep(0.02)
        victim = {first.pid: first, second.pid: second}[int(marker.read_text())]
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        # The batch had written its awards: its re-run must not write them again.
        assert ("u0025", "member", 1, "backfill") in (await read_tables(database_url)).awards
        with anyio.fail_after(40):
            while not reports:  # noqa: ASYNC110 - the run's task fills it
                await anyio.sleep(0.1)
    [report] = reports
    assert (report.users, report.evaluations, report.failed) == (60, 240, 0)
    clean = await clean_run(database_url, tmp_path, 60)
    assert_same_as(clean, await read_tables(database_url))
    # The killed batch ran again, on the worker left, and it granted only what was missing.
    survivor = logs[1] if victim is first else logs[0]
    assert "try=2" in survivor.read_text()
    assert report.granted < clean.report["granted"]


async def test_deferred_without_a_live_worker_is_refused_naming_the_queue(
    redis_url: str, queue_name: str, tmp_path: pathlib.Path
) -> None:
    """Guards the check before any batch is sent: without it, the command would queue its
    first batches and wait for a worker forever."""
    url = await migrated(f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}")
    env = process_env(
        ABADGES_DATABASE_URL=url,
        ABADGES_REDIS_URL=redis_url,
        ABADGES_QUEUE_NAME=queue_name,
        ABADGES_BADGES=BADGE_MODULE,
        ABADGES_TEST_USERS="30",
    )
    done = await abadges(env, "backfill", "--users", USERS_FUNCTION, "--deferred")
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr.decode() == (
        f"Error: --deferred sends the batches to the workers of queue {queue_name!r}, and none "
        "is live: start `arq abadges.worker.WorkerSettings`, or run without --deferred.\n"
    )
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.zcard(queue_name) == 0
    finally:
        await client.aclose()
    assert (await read_tables(url)).awards == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_batch_the_worker_cannot_write_ends_the_run_with_its_error(
    app: BadgeRegistry, worker_env: dict[str, str], database_url: str, tmp_path: pathlib.Path
) -> None:
    """An app's own constraint refuses u0013's awards: the worker's batch 1 fails for good, it
    pushes the error, and the run raises it, on its own, naming the batch and its users.
    Guards the error's way back from the worker, and the run's raising of the one error of
    its last batch task (it raised an ExceptionGroup of it and a BrokenResourceError)."""
    constraint = f"no_u0013_{uuid.uuid4().hex[:8]}"
    await app.database.execute(
        f"ALTER TABLE abadges_awards ADD CONSTRAINT {constraint} CHECK (user_id <> 'u0013')"
    )
    try:
        async with worker(worker_env, tmp_path / "worker.log"):
            with anyio.fail_after(30), pytest.raises(BackfillJobError) as caught:
                await app.backfill(user_ids(30), deferred=True, batch_size=10, concurrency=1)
    finally:
        await app.database.execute(f"ALTER TABLE abadges_awards DROP CONSTRAINT {constraint}")
    message = str(caught.value)
    assert message.startswith(
        "A worker could not run batch 1 of the backfill (users 'u0010' to 'u0019'): "
        "CheckViolationError: "
    ), message
    assert constraint in message
    held = {user for user, *_ in (await read_tables(database_url)).awards}
    assert held == set(user_ids(10))  # Batch 0 is written; batch 2 was never sent.


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_batch_job_that_times_out_ends_the_run_naming_the_batch(
    app: BadgeRegistry, worker_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """u0013's evaluation never returns: arq cancels batch 1's job after its 2-s timeout and
    drops it, with no report pushed. Guards the run's watch on its jobs: without it, the run
    would wait for that batch forever (saying so once a minute)."""
    env = {**worker_env, "ABADGES_TEST_STALL_USER": "u0013"}
    log = tmp_path / "worker.log"
    async with worker(env, log, QUICK_RETRY):
        with anyio.fail_after(30), pytest.raises(BackfillJobError) as caught:
            await app.backfill(user_ids(30), deferred=True, batch_size=10, concurrency=1)
    assert str(caught.value) == (
        "A worker could not run batch 1 of the backfill (users 'u0010' to 'u0019'): its job "
        "ended without a report: it ran past the worker's job_timeout, or out of tries (see "
        "the worker's log)."
    )
    assert "TimeoutError" in log.read_text()


# 3. abadges backfill -------------------------------------------------------------------------


@pytest.fixture
async def cli_env(tmp_path: pathlib.Path, redis_url: str, queue_name: str) -> dict[str, str]:
    """The environment of `abadges backfill` on a fresh SQLite file, `$ABADGES_DATABASE_URL`."""
    url = await migrated(f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}")
    return process_env(
        ABADGES_DATABASE_URL=url,
        ABADGES_REDIS_URL=redis_url,
        ABADGES_QUEUE_NAME=queue_name,
        ABADGES_BADGES=BADGE_MODULE,
    )


LINE = re.compile(
    r"backfill: (\d+) of 60 users, [\d,]+ users/s, (\d+) granted(, \d+ revoked)?(, \d+ failed)?"
)


async def test_abadges_backfill_in_a_pipe_prints_lines_and_the_report(
    cli_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """Guards the command's output off a terminal (plain lines at most once a second on
    stderr, the report on stdout, no colour codes), --dry-run, --revoke, and the exit status
    1 of a run where a badge failed for a user."""
    url = cli_env["ABADGES_DATABASE_URL"]
    registry = BadgeRegistry()
    registry.configure(database_url=url, queue="inline")
    for badge_class in BADGES:
        registry.register(badge_class)
    async with registry.lifespan():
        await registry.grant("u0001", "tier", 3)  # award() gives u0001 level 2.
    # 30 ms a user: batches of 10 users a third of a second apart.
    env = {**cli_env, "ABADGES_TEST_USERS": "60", "ABADGES_TEST_FAIL_USER": "u0004"}
    env["ABADGES_TEST_BACKFILL_DELAY"] = "0.03"
    args = ["backfill", "--users", USERS_FUNCTION, "--revoke", "--total", "60"]
    args += ["--batch-size", "10", "--concurrency", "1"]

    dry = await abadges({**env, "ABADGES_TEST_BACKFILL_DELAY": "0"}, *args, "--dry-run")
    assert dry.returncode == 1, dry.stderr.decode()
    summary = dry.stdout.decode().splitlines()[5]
    assert re.fullmatch(
        r"60 users, 240 evaluations in \d+\.\ds: 179 would be granted, 1 would be revoked, "
        r"1 failed\. Dry run: nothing was written\.",
        summary,
    ), summary
    assert (await read_tables(url)).awards == [("u0001", "tier", 3, "manual")]

    done = await abadges(env, *args)
    assert done.returncode == 1
    out, err = done.stdout.decode(), done.stderr.decode()
    assert "\x1b" not in out + err
    lines = err.splitlines()
    assert all(LINE.fullmatch(line) for line in lines), err
    assert lines[-1].startswith("backfill: 60 of 60 users, ")
    assert lines[-1].endswith(" 179 granted, 1 revoked, 1 failed")
    # Six batches about a third of a second apart: a line at most once a second (a line a
    # batch would be seven), and the last counts.
    assert 2 <= len(lines) <= 5, lines
    report = out.splitlines()
    assert report[:5] == [
        "badge   evaluations  granted  revoked  failed",
        "member  60           60       0        0",
        "tally   60           30       0        0",
        "tier    60           59       1        1",
        "rank    60           30       0        0",
    ]
    assert re.fullmatch(
        r"60 users, 240 evaluations in \d+\.\ds: 179 granted, 1 revoked, 1 failed\.", report[5]
    ), report[5]
    assert report[6:] == [
        "The first 1 errors:",
        "  RuntimeError: tier is out of order Raised by badge 'tier' for user 'u0004'.",
    ]
    tables = await read_tables(url)
    assert ("u0001", "tier", 2, "backfill") in tables.awards
    assert ("u0001", "tier", 3, "manual") not in tables.awards


async def test_abadges_backfill_json_reports_what_the_call_does(
    cli_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """Guards --json (the report's data on stdout, nothing on stderr), a --users function
    that is a coroutine function, and the refusal of a --users that is not callable."""
    env = {**cli_env, "ABADGES_TEST_USERS": "60"}
    done = await abadges(
        env, "backfill", "--users", "tests.support.backfill_badges:async_users", "--json"
    )
    assert (done.returncode, done.stderr) == (0, b""), done.stderr.decode()
    clean = await clean_run(env["ABADGES_DATABASE_URL"], tmp_path, 60)
    assert counts(json.loads(done.stdout)) == clean.report
    assert_same_as(clean, await read_tables(env["ABADGES_DATABASE_URL"]))

    spec = "tests.support.backfill_badges:NOT_CALLABLE"
    refused = await abadges(env, "backfill", "--users", spec)
    assert (refused.returncode, refused.stdout) == (1, b"")
    assert refused.stderr.decode() == (
        f"Error: --users {spec!r} names 'users', which is not callable.\n"
    )


async def test_abadges_backfill_publishes_notices_only_with_notify(
    cli_env: dict[str, str], redis_url: str, queue_name: str
) -> None:
    # Deleted with the queue's keys (the queue_name fixture).
    env = {**cli_env, "ABADGES_TEST_USERS": "20", "ABADGES_NOTICES_STREAM": f"{queue_name}:n"}
    users = "tests.support.backfill_badges:users"
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        quiet = await abadges(env, "backfill", "--users", users, "--json", "--badge", "member")
        assert json.loads(quiet.stdout)["granted"] > 0, quiet.stderr.decode()
        assert await client.xlen(f"{queue_name}:n") == 0
        done = await abadges(env, "backfill", "--users", users, "--json", "--notify")
        granted = json.loads(done.stdout)["granted"]
        assert granted > 0, done.stderr.decode()
        entries = await client.xrange(f"{queue_name}:n")
        assert [fields[b"change"] for _, fields in entries] == [b"granted"] * granted
    finally:
        await client.aclose()


async def test_abadges_backfill_takes_the_total_of_a_sized_result_and_refuses_bad_options(
    cli_env: dict[str, str],
) -> None:
    """Guards the ETA's total from a --users function that gives a list (no --total needed),
    the usage errors (exit 2, no traceback) of options that go apart, and the error of a run
    with no badge registered."""
    env = {**cli_env, "ABADGES_TEST_USERS": "60"}
    done = await abadges(
        env, "backfill", "--users", "tests.support.backfill_badges:async_users", "--badge", "member"
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr.decode().splitlines()[-1].startswith("backfill: 60 of 60 users, ")
    for options, message in (
        (["--checkpoint", "c", "--dry-run"], "--checkpoint and --dry-run go apart"),
        (["--checkpoint", ""], "Invalid value for --checkpoint: must not be empty."),
    ):
        refused = await abadges(env, "backfill", "--users", USERS_FUNCTION, *options)
        err = refused.stderr.decode()
        assert (refused.returncode, message in err, "Traceback" in err) == (2, True, False), err
    # A module that registers no badge: the error says so, without a traceback.
    unset = {**env, "ABADGES_BADGES": "tests.support"}
    refused = await abadges(unset, "backfill", "--users", USERS_FUNCTION)
    assert (refused.returncode, refused.stdout) == (1, b"")
    assert refused.stderr.decode().endswith(
        "Error: backfill() has no badge to evaluate: none is registered. Register the badges "
        "first; the abadges command imports the modules of ABADGES_BADGES (or --badges).\n"
    ), refused.stderr.decode()


def run_on_a_terminal(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run `command` with a pseudo-terminal as its stdin, stdout and stderr; return its exit
    status and everything it wrote there."""
    master, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            command, stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd=ROOT
        )
    finally:
        os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # EIO: every end of the terminal in the child is closed.
                    break
                output += chunk
        else:
            raise TimeoutError(f"{command} ran over {timeout}s: {output.decode()[-2000:]}")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return process.wait(), output.decode()


async def test_abadges_backfill_on_a_terminal_shows_a_progress_bar(
    cli_env: dict[str, str],
) -> None:
    """Guards the rich progress bar (users done of the total a sized result gives, users/s,
    granted) and the rich table of the report on a terminal."""
    env = {**cli_env, "ABADGES_TEST_USERS": "60", "ABADGES_TEST_BACKFILL_DELAY": "0.01"}
    env |= {"TERM": "xterm-256color", "COLUMNS": "160"}
    sized = "tests.support.backfill_badges:async_users"
    command = [ABADGES, "backfill", "--users", sized, "--batch-size", "10"]
    code, output = await anyio.to_thread.run_sync(run_on_a_terminal, command, env, 60)
    assert code == 0, output
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    bar = [line for line in plain.splitlines() if line.lstrip().startswith("backfill")]
    assert bar, plain
    assert re.search(r"backfill .* 60/60 users [\d,]+ users/s 180 granted", bar[-1]), bar[-1]
    assert re.search(r"│ member\s+│ 60\s+│ 60\s+│ 0\s+│ 0\s+│", plain), plain
    assert "backfill: " not in plain  # No plain lines on a terminal.


async def interrupted(
    command: list[str], env: dict[str, str], ready: Callable[[], Awaitable[object]]
) -> tuple[int | None, str, str]:
    """Start `command`, press Ctrl-C (SIGINT) once `ready()` is true; its exit status, stdout
    and stderr."""
    process = await anyio.open_process(command, env=env, cwd=ROOT)
    try:
        with anyio.fail_after(30):
            while not await ready():
                assert process.returncode is None, "the command ended before Ctrl-C"
                await anyio.sleep(0.02)
            process.send_signal(signal.SIGINT)
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stdout is not None and process.stderr is not None
    out = b"".join([chunk async for chunk in process.stdout]).decode()
    err = b"".join([chunk async for chunk in process.stderr]).decode()
    return process.returncode, out, err


async def test_ctrl_c_stops_abadges_backfill_and_the_same_command_resumes(
    cli_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """Guards Ctrl-C: exit status 130 and a message saying how to go on, without a checkpoint
    and with one, which keeps the batches written; the same command then skips them, and the
    runs end with exactly the awards of one clean run."""
    url = cli_env["ABADGES_DATABASE_URL"]
    name = "cli-ctrl-c"
    env = {**cli_env, "ABADGES_TEST_USERS": "120"}
    slow = {**env, "ABADGES_TEST_BACKFILL_DELAY": "0.02"}
    command = [ABADGES, "backfill", "--users", USERS_FUNCTION]
    command += ["--batch-size", "10", "--concurrency", "2"]

    async def awarded() -> bool:
        return bool((await read_tables(url)).awards)

    code, out, err = await interrupted(command, slow, awarded)
    assert (code, out) == (130, ""), err
    assert re.fullmatch(
        r"Stopped after \d+ users; the awards written stay\. Run again to go on \(nothing is "
        r"recorded twice\), with --checkpoint NAME to resume where a run stopped\.",
        err.splitlines()[-1],
    ), err

    # With a checkpoint, stuck in batch 3 (u0035 never returns) while batches 4, 5, ... are
    # written: the checkpoint stays at 30 users, and the batches after it are evaluated again.
    async def batch_5_written() -> bool:
        return ("u0050", "member", 1, "backfill") in (await read_tables(url)).awards

    command += ["--checkpoint", name]
    stuck = {**slow, "ABADGES_TEST_STALL_USER": "u0035"}
    code, out, err = await interrupted(command, stuck, batch_5_written)
    assert (code, out) == (130, ""), err
    stopped = re.fullmatch(
        rf"Stopped after (\d+) users; checkpoint '{name}' keeps the batches written: run the "
        "same command again to resume after them.",
        err.splitlines()[-1],
    )
    assert stopped, err
    position = await saved_position(url, name)
    assert position == 30
    assert 50 <= int(stopped[1]) < 120

    again = await abadges(env, *command[1:])
    assert again.returncode == 0, again.stderr.decode()
    summary = again.stdout.decode().splitlines()[-1]
    assert summary.startswith(f"{120 - position} users, ")
    assert summary.endswith(f" 0 failed. {position} users done before were skipped.")
    assert await saved_position(url, name) is None
    clean = await clean_run(url, tmp_path, 120)
    assert_same_as(clean, await read_tables(url))
