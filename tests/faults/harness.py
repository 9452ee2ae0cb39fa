"""A load run with a fault: app processes fire the seeded stream of `load` at a private
PostgreSQL while workers drain a private Redis, a fault strikes during the run, and the awards
table is compared with the reference computation once the queue is drained.

Used by `test_load.py` (small, in CI) and `soak.py` (long, on demand).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import asyncpg  # type: ignore[import-untyped]
import redis.asyncio

from abadges import BadgeRegistry
from tests.faults.load import Held, reference, stream
from tests.faults.servers import PersistentRedis, PostgresServer
from tests.support import ARQ, award_jobs, stop

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUEUE = "abadges:load"

#: A fault: strikes during the run, and returns how many times it struck.
Fault = Callable[["LoadRun"], Awaitable[int]]


@dataclasses.dataclass
class Report:
    """What a run did, and how the table compares with the reference."""

    fault: str
    events: int
    expected: int
    awards: int
    lost: int
    duplicated: int
    faults: int
    retries: int
    worker_deaths: int
    firing: float  # Seconds the slowest app took to get all its events through.
    seconds: float
    differences: list[str]

    def summary(self) -> str:
        return (
            f"{self.fault}: {self.events} events, {self.awards}/{self.expected} awards, "
            f"{self.faults} faults, {self.retries} retried calls, lost {self.lost}, "
            f"duplicated {self.duplicated}, unexpected worker deaths {self.worker_deaths}, "
            f"fired in {self.firing:.1f} s, settled in {self.seconds:.1f} s"
        )


class LoadRun:
    """The servers, processes and logs of one run."""

    def __init__(
        self,
        postgres: PostgresServer,
        redis_server: PersistentRedis,
        logs: pathlib.Path,
        *,
        events: int,
        seed: int = 6,
        apps: int = 3,
        workers: int = 2,
        concurrency: int = 8,
        settle: float = 90,
    ) -> None:
        self.postgres, self.redis = postgres, redis_server
        self.logs, self.events, self.seed = logs, events, seed
        self.apps, self.worker_count, self.concurrency = apps, workers, concurrency
        self.settle = settle
        self.rng = random.Random(seed)
        self.workers: list[anyio.abc.Process] = []
        self.killed: set[int] = set()  # Workers a fault killed.
        self.deaths: set[int] = set()  # Workers that exited on their own.
        self.stuck = ""  # What the queue held when the run did not settle.
        self.firing = 0  # App processes still firing their events.
        self.struck: collections.Counter[str] = collections.Counter()  # Faults, by kind.
        self.env = {
            **os.environ,
            "ABADGES_DATABASE_URL": postgres.url,
            "ABADGES_REDIS_URL": redis_server.url,
            "ABADGES_QUEUE_NAME": QUEUE,
            "PYTHONPATH": str(ROOT),
            "LOAD_SEED": str(seed),
            "LOAD_EVENTS": str(events),
            "LOAD_CONCURRENCY": str(concurrency),
        }

    # Processes --------------------------------------------------------------------------------

    async def start_worker(self) -> None:
        with (self.logs / f"worker-{len(self.workers)}.log").open("ab") as log:
            self.workers.append(
                await anyio.open_process(
                    [ARQ, "tests.faults.load_worker.Settings"],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            )

    async def kill_worker(self) -> None:
        """SIGKILL a running worker, mid-job or not, and start another in its place."""
        victim = self.rng.choice([w for w in self.workers if w.returncode is None])
        self.killed.add(victim.pid)
        victim.kill()
        await victim.wait()
        await self.start_worker()

    async def _app(self, shard: int, summaries: list[dict[str, Any]]) -> None:
        log = self.logs / f"app-{shard}.log"
        self.firing += 1
        try:
            with log.open("ab") as errors:
                result = await anyio.run_process(
                    [sys.executable, str(ROOT / "tests" / "faults" / "load.py"), str(shard),
                     str(self.apps)],
                    env=self.env, stderr=errors, check=False,
                )  # fmt: skip
        finally:
            self.firing -= 1
        if result.returncode != 0:
            raise AssertionError(f"app {shard} failed:\n{log.read_text()[-3000:]}")
        summaries.append(json.loads(result.stdout))

    # The run ----------------------------------------------------------------------------------

    async def run(self, name: str, fault: Fault) -> Report:
        registry = BadgeRegistry()
        registry.configure(database_url=self.postgres.url)
        async with registry.lifespan():
            await registry.create_tables()
        expected = reference(stream(self.seed, self.events))
        started = time.monotonic()
        for _ in range(self.worker_count):
            await self.start_worker()
        summaries: list[dict[str, Any]] = []
        struck = 0
        try:
            async with anyio.create_task_group() as supervision:
                supervision.start_soon(self._supervise)
                async with anyio.create_task_group() as task_group:
                    for shard in range(self.apps):
                        task_group.start_soon(self._app, shard, summaries)
                    # Strike once the load runs: an app that cannot reach its database when it
                    # starts fails at once, as it should, and is not what this run is about.
                    with anyio.fail_after(30):
                        while True:  # Polling the database: nothing else tells.
                            if await self.held():
                                break
                            await anyio.sleep(0.05)
                    struck = await fault(self)
                await self._settle(expected)
                supervision.cancel_scope.cancel()
        finally:
            await self._stop_workers()
        seconds = time.monotonic() - started
        held = await self.held()  # Once more, with every worker stopped.
        lost, extra = expected - held, held - expected
        return Report(
            fault=name,
            events=self.events,
            expected=sum(expected.values()),
            awards=sum(held.values()),
            lost=sum(lost.values()),
            duplicated=sum(extra.values()),
            faults=struck,
            retries=sum(summary["retries"] for summary in summaries),
            worker_deaths=len(self.deaths),
            firing=max(summary["seconds"] for summary in summaries),
            seconds=seconds,
            differences=[self.stuck] * bool(self.stuck)
            + [f"missing {k} x{n}" for k, n in sorted(lost.items())][:10]
            + [f"extra {k} x{n}" for k, n in sorted(extra.items())][:10],
        )

    async def _settle(self, expected: Held) -> None:
        """Wait until the queue is drained and the table holds the reference, or `settle`
        seconds have passed; a run that never gets there reports what differs."""
        client = redis.asyncio.Redis.from_url(self.redis.url)
        try:
            with anyio.move_on_after(self.settle) as timer:
                while True:
                    queued = award_jobs(await client.zrange(QUEUE, 0, -1))
                    running = award_jobs(await client.keys("arq:in-progress:*"))
                    held = await self.held()
                    if not queued and not running and held == expected:
                        break
                    await anyio.sleep(0.2)
            if timer.cancelled_caught:
                jobs = await client.zrange(QUEUE, 0, -1, withscores=True)
                running = award_jobs(await client.keys("arq:in-progress:*"))
                self.stuck = (
                    f"after {self.settle} s: queued {jobs[:5]} ({len(jobs)} in all) at "
                    f"{time.time() * 1000:.0f}, in progress {running}, "
                    f"job keys {len(await client.keys('arq:job:*'))}"
                )
        finally:
            await client.aclose()

    async def _supervise(self) -> None:
        """Start a new worker for each that exited without being killed, as systemd's
        `Restart=always` or a container orchestrator would, and count those deaths."""
        while True:
            for worker in list(self.workers):
                dead = worker.returncode is not None
                if dead and worker.pid not in self.killed and worker.pid not in self.deaths:
                    self.deaths.add(worker.pid)
                    await self.start_worker()
            await anyio.sleep(0.2)

    async def _stop_workers(self) -> None:
        """SIGTERM the workers still running; count those found dead and not yet counted."""
        for worker in self.workers:
            if worker.returncode is not None:
                if worker.pid not in self.killed:
                    self.deaths.add(worker.pid)
                continue
            await stop(worker)

    async def held(self) -> Held:
        """The awards table, as (user, slug, level) -> how many rows."""
        connection = await asyncpg.connect(
            host="127.0.0.1", port=self.postgres.port, user="postgres", database="postgres"
        )
        try:
            rows = await connection.fetch("SELECT user_id, slug, level FROM abadges_awards")
        finally:
            await connection.close()
        return collections.Counter((row[0], row[1], row[2]) for row in rows)

    def worker_logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-2000:]}"
            for path in sorted(self.logs.glob("worker-*.log"))
        )


# The faults -----------------------------------------------------------------------------------


async def no_fault(run: LoadRun) -> int:
    return 0


async def kill_workers(run: LoadRun, times: int = 3) -> int:
    """SIGKILL a worker at a random moment, `times` times, each replaced at once."""
    for _ in range(times):
        await anyio.sleep(run.rng.uniform(0.3, 1.5))
        await run.kill_worker()
    return times


async def restart_redis(run: LoadRun, times: int = 2) -> int:
    """Stop Redis (a clean shutdown: its append-only file is synced), start it again 1 s later."""
    for _ in range(times):
        await anyio.sleep(run.rng.uniform(0.5, 1.5))
        await run.redis.stop()
        await anyio.sleep(1)
        await run.redis.start()
    return times


async def terminate_connections(run: LoadRun, times: int = 4) -> int:
    """`pg_terminate_backend` every connection of the apps and workers, `times` times."""
    for _ in range(times):
        await anyio.sleep(run.rng.uniform(0.3, 1.0))
        await run.postgres.terminate_connections()
    return times


async def stop_database(run: LoadRun, times: int = 1) -> int:
    """Stop PostgreSQL (fast shutdown: open transactions roll back) for 3 seconds."""
    for _ in range(times):
        await anyio.sleep(run.rng.uniform(0.5, 1.0))
        await run.postgres.stop(signal.SIGINT)
        await anyio.sleep(3)
        await run.postgres.start()
    return times


async def chaos(run: LoadRun) -> int:
    """Every fault above, one after another in a random order, for as long as the apps fire;
    what struck is counted by kind in `run.struck`."""
    kinds = [kill_workers, restart_redis, terminate_connections, stop_database]
    while run.firing:
        fault = run.rng.choice(kinds)
        run.struck[fault.__name__] += await fault(run, 1)
    return sum(run.struck.values())


FAULTS: dict[str, Fault] = {
    "none": no_fault,
    "kill_workers": kill_workers,
    "restart_redis": restart_redis,
    "terminate_connections": terminate_connections,
    "stop_database": stop_database,
}
