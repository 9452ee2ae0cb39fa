"""abadges on the workloads of issue 5 (see workload.py), printing text and JSON lines:

    .venv/bin/python benchmarks/bench.py [W1 W2 W1-deferred W3 ...]
        [--database postgresql sqlite mysql] [--users 1000 --events 10000 --callers 1 8 64]
        [--workers 1 2 --trials 300]

- W1: inline, each of `--callers` concurrent callers as a web server would have them.
- W2: the `multiple` badge, one caller awaiting in sequence (as raw-insert's one connection).
- W1-deferred: the app enqueues (one job per event, one caller), then each of `--workers`
  `arq abadges.worker.Settings` processes with the shipped defaults drains the queue; the worker
  line gives badge evaluations per second and the largest peak RSS of the processes.
- W3: 8 concurrent callers, same user, same badge, `--trials` times: duplicates found.

PostgreSQL and MariaDB run in a scratch database `abadges_bench_<hex>` of 127.0.0.1 (dropped at
the end), SQLite in a temporary file; Redis is 127.0.0.1:6379, with a queue and a notices stream
of the run's own, deleted at the end. The shipped defaults publish notices: they are in the
measured path.
`--postgres` points the registries at another server URL for that database, such as a
PgBouncer in front of 127.0.0.1:5432, and `--postgres-options` adds a query string, such as
`statement_cache_size=0`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import asyncmy
import asyncpg
import redis.asyncio

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workload  # noqa: E402
from bench_badges import AlwaysBadge, w1_badges  # noqa: E402

from abadges import Badge, BadgeRegistry  # noqa: E402

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432"
#: What the registries connect to for PostgreSQL: set from --postgres and --postgres-options.
POSTGRES = {"url": PG, "query": ""}
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root"}
REDIS = "redis://127.0.0.1:6379"
ARQ = str(pathlib.Path(sys.executable).parent / "arq")
WORKLOADS = ["W1", "W2", "W1-deferred", "W3"]


@dataclasses.dataclass
class User:
    id: int
    points: int


@contextlib.asynccontextmanager
async def database(kind: str) -> AsyncIterator[str]:
    """A URL to an empty database of `kind`, removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="abadges-bench-") as directory:
            yield f"sqlite+aiosqlite:///{directory}/bench.sqlite3"
        return
    name = f"abadges_bench_{secrets.token_hex(6)}"
    if kind == "mysql":
        my = await asyncmy.connect(**MYSQL, autocommit=True)
        try:
            async with my.cursor() as cursor:
                await cursor.execute(f"CREATE DATABASE `{name}`")
            try:
                yield f"mysql+asyncmy://root@127.0.0.1:3306/{name}"
            finally:
                async with my.cursor() as cursor:
                    await cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            my.close()
        return
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{POSTGRES['url']}/{name}{POSTGRES['query']}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def registry_of(
    url: str, badges: list[type[Badge]], **settings: Any
) -> AsyncIterator[BadgeRegistry]:
    registry = BadgeRegistry()
    for badge_class in badges:
        registry.register(badge_class)
    # The notices go to a stream of the run's own, deleted with the run's other keys.
    queue = settings.setdefault("queue_name", f"abadges:bench:{secrets.token_hex(6)}")
    registry.configure(database_url=url, redis_url=REDIS, notices_stream=f"{queue}:changes",
                       **settings)  # fmt: skip
    try:
        async with registry.lifespan():
            await registry.create_tables()
            yield registry
    finally:
        await delete_keys(queue)


async def delete_keys(queue: str) -> None:
    """Every key of the run carries the queue's name: the queue, the notices stream, the health
    keys, and the claim of the periodic expiry job, which arq keeps for a minute after it ran."""
    client = redis.asyncio.Redis.from_url(REDIS)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{queue}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def count_awards(registry: BadgeRegistry) -> int:
    return sum(sum(levels.values()) for levels in (await registry.award_counts()).values())


async def fire(
    call: Callable[[int, int], Awaitable[Any]], events: list[tuple[int, int]], callers: int
) -> tuple[float, list[float]]:
    """Run `call(user, points)` for each event, `callers` at a time; seconds and latencies."""
    latencies: list[float] = []
    pending = iter(events)

    async def caller() -> None:
        for user, points in pending:
            start = time.perf_counter()
            await call(user, points)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with anyio.create_task_group() as task_group:
        for _ in range(callers):
            task_group.start_soon(caller)
    return time.perf_counter() - start, latencies


async def w1(kind: str, stream: workload.Stream, callers: int) -> dict[str, Any]:
    async with database(kind) as url, registry_of(url, w1_badges(deferred=False)) as registry:

        async def call(user: int, points: int) -> None:
            # Each call gets the user as it is after its event, as a request would load it.
            await registry.possibly_award_badge(workload.EVENT, user=User(user, points))

        seconds, latencies = await fire(call, stream.replay(), callers)
        awards = await count_awards(registry)
    return workload.measure(
        "W1", "abadges", kind, seconds, latencies, awards, workload.expected_w1(stream),
        callers=callers,
    )  # fmt: skip


async def w2(kind: str, stream: workload.Stream, callers: int) -> dict[str, Any]:
    async with database(kind) as url, registry_of(url, [AlwaysBadge]) as registry:

        async def call(user: int, points: int) -> None:
            await registry.possibly_award_badge(workload.EVENT, user=User(user, points))

        seconds, latencies = await fire(call, stream.replay(), callers)
        awards = await count_awards(registry)
    return workload.measure(
        "W2", "abadges", kind, seconds, latencies, awards, len(stream.events), callers=callers
    )


async def w1_deferred(
    kind: str, stream: workload.Stream, callers: int, workers: list[int]
) -> list[dict[str, Any]]:
    expected = workload.expected_w1(stream)
    results = []
    for processes in workers:
        queue = f"abadges:bench:{secrets.token_hex(6)}"
        client = redis.asyncio.Redis.from_url(REDIS)
        try:
            async with (
                database(kind) as url,
                registry_of(url, w1_badges(deferred=True), queue_name=queue) as registry,
            ):

                async def call(user: int, points: int) -> None:
                    await registry.possibly_award_badge(workload.EVENT, user=User(user, points))

                seconds, latencies = await fire(call, stream.replay(), callers)
                queued = await client.zcard(queue)
                if processes == workers[0]:
                    results.append(workload.measure(
                        "W1-deferred", "abadges", kind, seconds, latencies, queued,
                        len(stream.events), side="request", callers=callers,
                    ))  # fmt: skip
                results.append(await drain(url, queue, registry, expected, processes))
        finally:
            await client.aclose()
    return results


async def drain(
    url: str, queue: str, registry: BadgeRegistry, expected: int, processes: int
) -> dict[str, Any]:
    """Start `processes` workers on the full queue; time them from the first job taken (their
    start-up, imports and connections, is left out) until the queue is empty and the table
    holds `expected` awards; read each one's peak RSS from /proc."""
    env = {
        **os.environ,
        "ABADGES_DATABASE_URL": url,
        "ABADGES_REDIS_URL": REDIS,
        "ABADGES_QUEUE_NAME": queue,
        "ABADGES_NOTICES_STREAM": f"{queue}:changes",
        "ABADGES_BADGES": "bench_badges",
        "PYTHONPATH": str(HERE),
    }
    client = redis.asyncio.Redis.from_url(REDIS)
    jobs = await client.zcard(queue)
    started = time.perf_counter()
    first = None
    running = []
    try:
        for _ in range(processes):
            running.append(await anyio.open_process(
                [ARQ, "abadges.worker.Settings"], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        while True:
            left = await client.zcard(queue)
            if first is None and left < jobs:
                first = time.perf_counter()  # A worker has started (imports, connects).
            if not left and await count_awards(registry) >= expected:
                break
            for process in running:
                if process.returncode is not None:
                    raise RuntimeError(f"a worker exited with {process.returncode}")
            await anyio.sleep(0.02)
        seconds = time.perf_counter() - (first or started)
        rss = max(peak_rss_mb(process.pid) for process in running)
    finally:
        for process in running:
            process.terminate()
        for process in running:
            await process.wait()
        await client.aclose()
    awards = await count_awards(registry)
    result = workload.measure(
        "W1-deferred", "abadges", url.split("+")[0], seconds, [], awards, expected,
        side="worker", processes=processes, jobs=jobs,
        evaluations_per_s=round(jobs * workload.BADGES / seconds), peak_rss_mb=rss,
    )  # fmt: skip
    result["events_per_s"] = round(jobs / seconds, 1)
    return result


def peak_rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc")


async def w3(kind: str, trials: int) -> dict[str, Any]:
    async with database(kind) as url, registry_of(url, w1_badges(deferred=False)[:1]) as registry:
        latencies: list[float] = []
        duplicated_trials = awards = 0
        seconds = 0.0

        async def call() -> None:
            start = time.perf_counter()
            await registry.possibly_award_badge(workload.EVENT, user=User(0, 3001))
            latencies.append(time.perf_counter() - start)

        for _ in range(trials):
            start = time.perf_counter()
            async with anyio.create_task_group() as task_group:
                for _ in range(8):
                    task_group.start_soon(call)
            seconds += time.perf_counter() - start
            held = await registry.revoke(0, "points_0")
            awards += held
            duplicated_trials += held > 1
    return workload.measure(
        "W3", "abadges", kind, seconds, latencies, awards, trials,
        trials=trials, trials_with_duplicates=duplicated_trials,
    )  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    POSTGRES["url"] = args.postgres
    POSTGRES["query"] = f"?{args.postgres_options}" if args.postgres_options else ""
    if POSTGRES != {"url": PG, "query": ""}:
        print(f"PostgreSQL through {POSTGRES['url']}/<database>{POSTGRES['query']}")
    stream = workload.stream(users=args.users, events=args.events)
    for name in args.workloads:
        for kind in args.database:
            if name == "W1":
                for callers in args.callers:
                    workload.report(await w1(kind, stream, callers))
            elif name == "W2":
                workload.report(await w2(kind, stream, 1))
            elif name == "W1-deferred":
                for result in await w1_deferred(kind, stream, 1, args.workers):
                    workload.report(result)
            elif name == "W3":
                workload.report(await w3(kind, args.trials))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*", default=WORKLOADS, help=" ".join(WORKLOADS))
    parser.add_argument("--database", nargs="+", default=["postgresql", "sqlite", "mysql"])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="processes")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--postgres", default=PG, help=f"server URL, no database (default {PG})")
    parser.add_argument("--postgres-options", default="", help="e.g. statement_cache_size=0")
    args = parser.parse_args(argv)
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {WORKLOADS}")
    return args


if __name__ == "__main__":
    anyio.run(main, parse())
