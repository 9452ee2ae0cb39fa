"""abadges on the workloads of issue 5 (see workload.py), printing text and JSON lines:

    .venv/bin/python benchmarks/bench.py [W1 W2 W1-deferred W3 ...] [--database postgresql sqlite]
        [--users 1000 --events 10000 --callers 8 --trials 300]

- W1: inline, `--callers` concurrent callers as a web server would have them (and 1).
- W2: the `multiple` badge, one caller awaiting in sequence (as raw-insert's one connection).
- W1-deferred: the app enqueues (one job per event, one caller), then one
  `arq abadges.worker.Settings` process with the shipped defaults drains the queue; the worker
  line gives badge evaluations per second and the worker's peak RSS.
- W3: 8 concurrent callers, same user, same badge, `--trials` times: duplicates found.

PostgreSQL runs in a scratch database `abadges_bench_<hex>` of 127.0.0.1:5432 (dropped at the
end), SQLite in a temporary file; Redis is 127.0.0.1:6379, with a queue of the run's own.
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
    registry.configure(database_url=url, **settings)
    async with registry.lifespan():
        await registry.create_tables()
        yield registry


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


async def w1_deferred(kind: str, stream: workload.Stream, callers: int) -> list[dict[str, Any]]:
    queue = f"abadges:bench:{secrets.token_hex(6)}"
    client = redis.asyncio.Redis.from_url(REDIS)
    expected = workload.expected_w1(stream)
    try:
        async with (
            database(kind) as url,
            registry_of(
                url, w1_badges(deferred=True), redis_url=REDIS, queue_name=queue
            ) as registry,
        ):

            async def call(user: int, points: int) -> None:
                await registry.possibly_award_badge(workload.EVENT, user=User(user, points))

            seconds, latencies = await fire(call, stream.replay(), callers)
            queued = await client.zcard(queue)
            request = workload.measure(
                "W1-deferred", "abadges", kind, seconds, latencies, queued, len(stream.events),
                side="request", callers=callers,
            )  # fmt: skip
            worker = await drain(url, queue, registry, expected)
    finally:
        # Every key of the run carries the queue's name: the queue, the health keys, and the
        # claim of the periodic expiry job, which arq keeps for a minute after it ran.
        keys = [key async for key in client.scan_iter(match=f"*{queue}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return [request, worker]


async def drain(url: str, queue: str, registry: BadgeRegistry, expected: int) -> dict[str, Any]:
    """Start one worker on the full queue; time it from the first job it takes (its start-up,
    imports and connections, is left out) until the queue is empty and the table holds
    `expected` awards; read its peak RSS from /proc."""
    env = {
        **os.environ,
        "ABADGES_DATABASE_URL": url,
        "ABADGES_REDIS_URL": REDIS,
        "ABADGES_QUEUE_NAME": queue,
        "ABADGES_BADGES": "bench_badges",
        "PYTHONPATH": str(HERE),
    }
    client = redis.asyncio.Redis.from_url(REDIS)
    jobs = await client.zcard(queue)
    process = await anyio.open_process(
        [ARQ, "abadges.worker.Settings"], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    started = time.perf_counter()
    first = None
    try:
        while True:
            left = await client.zcard(queue)
            if first is None and left < jobs:
                first = time.perf_counter()  # The worker has started (imports, connects).
            if not left and await count_awards(registry) >= expected:
                break
            if process.returncode is not None:
                raise RuntimeError(f"the worker exited with {process.returncode}")
            await anyio.sleep(0.02)
        seconds = time.perf_counter() - (first or started)
        rss = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        await process.wait()
        await client.aclose()
    awards = await count_awards(registry)
    result = workload.measure(
        "W1-deferred", "abadges", url.split("+")[0], seconds, [], awards, expected,
        side="worker", jobs=jobs, evaluations_per_s=round(jobs * workload.BADGES / seconds),
        peak_rss_mb=rss,
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
                for callers in dict.fromkeys([1, args.callers]):
                    workload.report(await w1(kind, stream, callers))
            elif name == "W2":
                workload.report(await w2(kind, stream, 1))
            elif name == "W1-deferred":
                for result in await w1_deferred(kind, stream, 1):
                    workload.report(result)
            elif name == "W3":
                workload.report(await w3(kind, args.trials))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*", default=WORKLOADS, help=" ".join(WORKLOADS))
    parser.add_argument("--database", nargs="+", default=["postgresql", "sqlite"])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--callers", type=int, default=8)
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
