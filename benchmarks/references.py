"""The raw-driver reference figures of issue 5, in the main virtualenv:

    .venv/bin/python benchmarks/references.py [--events 10000] [--drain-jobs 2000]

- raw-insert: asyncpg, one prepared single-row `INSERT ... ON CONFLICT DO NOTHING` per call into
  a copy of abadges' awards table (same columns, unique constraint and indexes) in a scratch
  database `abadges_bench_refs_<hex>` (dropped at the end): one connection awaiting in sequence,
  then 8 connections each awaiting its share at once.
- raw-enqueue: arq's `enqueue_job`, awaited in sequence by one caller, to a queue of its own.
- raw-drain: an arq worker in burst mode running a job that does nothing, with arq's default
  settings (poll_delay 0.5 s, max_jobs 10), then with abadges' (0.05 s, 50): arq's own ceiling
  for one worker process; its "latencies" are the gaps between two jobs' ends.

The Redis server is shared: only this run's queue and job keys are deleted, never anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import secrets
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.worker import Worker, func

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
PG_ADMIN_DATABASE = "test"
USERS = 1000  # Users of the stream the rows and jobs are made from (--users).
REDIS = RedisSettings(host="127.0.0.1", port=6379)

# abadges/tables.py's awards table, as PostgreSQL DDL.
AWARDS_DDL = [
    """CREATE TABLE abadges_awards (
        id bigserial PRIMARY KEY,
        user_id varchar(255) NOT NULL,
        slug varchar(100) NOT NULL,
        level smallint NOT NULL,
        awarded_at timestamptz NOT NULL,
        award_key varchar(64) NOT NULL DEFAULT '',
        CONSTRAINT abadges_awards_once UNIQUE (user_id, slug, level, award_key)
    )""",
    "CREATE INDEX abadges_awards_user ON abadges_awards (user_id, awarded_at)",
    "CREATE INDEX abadges_awards_holders ON abadges_awards (slug, level, awarded_at)",
]
INSERT = (
    "INSERT INTO abadges_awards (user_id, slug, level, awarded_at, award_key)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
)

Row = tuple[str, str, int, datetime.datetime, str]


def award_rows(events: int) -> list[Row]:
    """One W2-like award per event of the seeded stream, each with a key of its own."""
    now = datetime.datetime.now(datetime.UTC)
    stream = workload.stream(users=USERS, events=events)
    return [
        (f"user{user}", "always", 1, now, f"{i:032x}") for i, (user, _) in enumerate(stream.events)
    ]


async def insert_all(connection: asyncpg.Connection, rows: Iterable[Row]) -> list[float]:
    statement = await connection.prepare(INSERT)
    latencies = []
    for row in rows:
        start = time.perf_counter()
        await statement.fetchval(*row)
        latencies.append(time.perf_counter() - start)
    return latencies


async def raw_insert(events: int, connections: int) -> dict[str, Any]:
    name = f"abadges_bench_refs_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(database=PG_ADMIN_DATABASE, **PG)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            pool = [await asyncpg.connect(database=name, **PG) for _ in range(connections)]
            try:
                for statement in AWARDS_DDL:
                    await pool[0].execute(statement)
                rows = award_rows(events)
                start = time.perf_counter()
                shares = await asyncio.gather(
                    *(insert_all(c, rows[i::connections]) for i, c in enumerate(pool))
                )
                seconds = time.perf_counter() - start
                awards = await pool[0].fetchval("SELECT count(*) FROM abadges_awards")
            finally:
                for connection in pool:
                    await connection.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    latencies = [latency for share in shares for latency in share]
    return workload.measure(
        "raw-insert", "asyncpg", "postgresql", seconds, latencies, awards, events,
        connections=connections,
    )  # fmt: skip


def job_args(events: int) -> list[dict[str, Any]]:
    """A small JSON-like argument per event of the seeded stream."""
    stream = workload.stream(users=USERS, events=events)
    return [
        {"event": workload.EVENT, "user_id": f"user{user}", "state": {"points": points}}
        for user, points in stream.replay()
    ]


async def cleanup(redis: ArqRedis, queue: str, job_ids: list[str]) -> None:
    """Deletes this run's queue, health-check key and job keys, and nothing else."""
    prefixes = (job_key_prefix, result_key_prefix, in_progress_key_prefix, retry_key_prefix)
    keys = [prefix + job_id for job_id in job_ids for prefix in prefixes]
    await redis.delete(queue, queue + ":health-check")
    for i in range(0, len(keys), 1000):
        await redis.delete(*keys[i : i + 1000])


async def enqueue_all(redis: ArqRedis, queue: str, args: list[dict[str, Any]]) -> list[float]:
    latencies = []
    for arg in args:
        start = time.perf_counter()
        await redis.enqueue_job("abadges_bench_noop", arg, _queue_name=queue)
        latencies.append(time.perf_counter() - start)
    return latencies


async def raw_enqueue(events: int) -> dict[str, Any]:
    queue = f"abadges:bench:{secrets.token_hex(6)}"
    redis = await create_pool(REDIS)
    try:
        args = job_args(events)
        start = time.perf_counter()
        latencies = await enqueue_all(redis, queue, args)
        seconds = time.perf_counter() - start
        awards = await redis.zcard(queue)
    finally:
        job_ids = [i.decode() for i in await redis.zrange(queue, 0, -1)]
        await cleanup(redis, queue, job_ids)
        await redis.aclose()
    return workload.measure(
        "raw-enqueue", "arq", "redis", seconds, latencies, awards, events, callers=1
    )


async def raw_drain(jobs: int, **settings: Any) -> dict[str, Any]:
    queue = f"abadges:bench:{secrets.token_hex(6)}"
    ends: list[float] = []

    async def abadges_bench_noop(ctx: dict[str, Any], arg: dict[str, Any]) -> None:
        ends.append(time.perf_counter())

    redis = await create_pool(REDIS)
    job_ids: list[str] = []
    try:
        for arg in job_args(jobs):
            job = await redis.enqueue_job("abadges_bench_noop", arg, _queue_name=queue)
            assert job is not None
            job_ids.append(job.job_id)
        worker = Worker(
            functions=[func(abadges_bench_noop, name="abadges_bench_noop")],
            queue_name=queue,
            redis_settings=REDIS,
            burst=True,
            handle_signals=False,
            **settings,
        )
        start = time.perf_counter()
        try:
            await worker.async_run()  # not run_check(): it reads every result key of the server
        finally:
            await worker.close()
        seconds = time.perf_counter() - start
        done = worker.jobs_complete
    finally:
        await cleanup(redis, queue, job_ids)
        await redis.aclose()
    gaps = [b - a for a, b in zip([start, *ends], ends, strict=False)]
    return workload.measure(
        "raw-drain", "arq", "redis", seconds, gaps, done, jobs,
        failed=worker.jobs_failed, poll_delay=worker.poll_delay_s, max_jobs=worker.max_jobs,
    )  # fmt: skip


async def main(events: int, drain_jobs: int) -> None:
    workload.report(await raw_insert(events, connections=1))
    workload.report(await raw_insert(events, connections=8))
    workload.report(await raw_enqueue(events))
    if drain_jobs:
        workload.report(await raw_drain(drain_jobs))
        # abadges.worker's polling (worker_settings()): 10 times the jobs, as it drains faster.
        workload.report(await raw_drain(drain_jobs * 10, poll_delay=0.05, max_jobs=50))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Raw asyncpg and arq reference figures.")
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--drain-jobs", type=int, default=2000, help="0 skips raw-drain")
    args = parser.parse_args()
    USERS = args.users
    asyncio.run(main(args.events, args.drain_jobs))
