"""W4 of issue 14: `registry.backfill()` of W4's users (see workload.py) over the ten W1 badges,
in one process, printing text and JSON lines:

    .venv/bin/python benchmarks/backfill.py [--database postgresql sqlite]
        [--users 10000 100000] [--batch-size 500 --concurrency 4]

Each (database, size) runs in a child process of its own (`--child`), so that its peak RSS
(`VmHWM`) is that size's alone. The child streams the users from a generator, never a list,
and times two backfills of them: the first records every award, the second ("again") finds
them all held and must grant none. Evaluations per second are the report's `evaluations`
over the wall seconds of the `backfill()` call. The awards table is counted after each run
and checked, with the report's `granted`, against the count workload.py computes; a mismatch
(or a child that fails) exits 1.

PostgreSQL runs in a scratch database `abadges_bench_<hex>` of 127.0.0.1:5432 (dropped at the
end), SQLite in a temporary file, as in bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import workload
from bench import HERE, User, count_awards, database, peak_rss_mb, registry_of
from bench_badges import w1_badges

RUNS = ["first", "again"]


def users(count: int) -> Iterator[User]:
    """W4's users, one at a time."""
    for user, points in workload.users(count):
        yield User(user, points)


async def w4(kind: str, count: int, batch_size: int, concurrency: int) -> list[dict[str, Any]]:
    """Backfill `count` users twice into a new database of `kind`: the result of each run."""
    expected = workload.expected_w4(count)
    results = []
    async with database(kind) as url, registry_of(url, w1_badges(deferred=False)) as registry:
        start_rss = peak_rss_mb(os.getpid())  # Imports, connections and tables.
        for run in RUNS:
            started, cpu = time.perf_counter(), time.process_time()
            report = await registry.backfill(
                users(count), batch_size=batch_size, concurrency=concurrency
            )
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            awards = await count_awards(registry)
            # The first run records every award; the second finds them all held.
            granted = expected if run == "first" else 0
            ok = awards == expected and report.granted == granted and not report.failed
            results.append(
                {
                    "workload": "W4",
                    "impl": "abadges",
                    "database": kind,
                    "run": run,
                    "users": report.users,
                    "evaluations": report.evaluations,
                    "seconds": round(seconds, 3),
                    "cpu_seconds": round(cpu, 3),
                    "evaluations_per_s": round(report.evaluations / seconds),
                    "users_per_s": round(report.users / seconds),
                    "awards": awards,
                    "expected": expected,
                    "granted": report.granted,
                    "failed": report.failed,
                    "ok": ok and report.users == count,
                    "peak_rss_mb": peak_rss_mb(os.getpid()),
                    "start_rss_mb": start_rss,
                    "batch_size": batch_size,
                    "concurrency": concurrency,
                }
            )
    return results


def report(result: dict[str, Any]) -> None:
    """Print the result as a line of text, then as a JSON line (prefixed `json: `)."""
    verdict = "ok" if result["ok"] else "MISMATCH"
    parts = [f"W4 {result['database']:<10} {result['users']:>7,} users"]
    if "error" in result:
        parts.append(f"{verdict}: {result['error']}")
    else:
        parts += [
            f"{result['run']:<5} {result['evaluations_per_s']:>7,} evaluations/s",
            f"{result['seconds']:.2f} s ({result['cpu_seconds']:.2f} s CPU)",
            f"awards {result['awards']:,}/{result['expected']:,} {verdict}",
            f"granted {result['granted']:,} failed {result['failed']}",
            f"peak RSS {result['peak_rss_mb']} MB ({result['start_rss_mb']} MB before)",
            f"batch_size={result['batch_size']} concurrency={result['concurrency']}",
        ]
    print("  ".join(parts))
    print("json: " + json.dumps(result, sort_keys=True))
    sys.stdout.flush()


def child(args: argparse.Namespace) -> int:
    results = anyio.run(w4, args.database[0], args.users[0], args.batch_size, args.concurrency)
    for result in results:
        report(result)
    return 0 if all(result["ok"] for result in results) else 1


def main(args: argparse.Namespace) -> int:
    """Run each (database, size) in a child process; 1 if one of them failed."""
    failed = False
    for kind in args.database:
        for count in args.users:
            command = [
                sys.executable, str(HERE / "backfill.py"), "--child", "--database", kind,
                "--users", str(count), "--batch-size", str(args.batch_size),
                "--concurrency", str(args.concurrency),
            ]  # fmt: skip
            # The child's lines are passed on as they are; its errors go to stderr.
            process = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
            print(process.stdout, end="")
            if process.returncode and process.stdout.count("json: ") < len(RUNS):
                # A child that died before its results: a line that targets.py counts as a
                # mismatch, so that the run fails there too.
                result = {
                    "workload": "W4", "impl": "abadges", "database": kind, "users": count,
                    "awards": None, "expected": workload.expected_w4(count), "ok": False,
                    "error": f"exit status {process.returncode}",
                }  # fmt: skip
                report(result)
            failed |= process.returncode != 0
    return 1 if failed else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", nargs="+", default=["postgresql", "sqlite"])
    parser.add_argument("--users", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--child", action="store_true", help="one database and size, in-process")
    args = parser.parse_args(argv)
    if args.child and (len(args.database) != 1 or len(args.users) != 1):
        parser.error("--child takes one --database and one --users")
    return args


if __name__ == "__main__":
    arguments = parse()
    sys.exit(child(arguments) if arguments.child else main(arguments))
