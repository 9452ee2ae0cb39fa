"""The soak run of the fault suite, on demand: a long seeded stream fired by several app
processes while workers drain it and every fault strikes again and again (workers SIGKILLed,
Redis restarted, PostgreSQL connections terminated, PostgreSQL stopped), then the awards table
is compared with the reference computation of the stream.

    .venv/bin/python tests/faults/soak.py --events 30000 --apps 4 --workers 3

It starts a private PostgreSQL cluster (Debian's server binaries; as root it runs them as the
postgres user) and a private Redis with an append-only file, and removes both afterwards.
Prints the figures as text and as a JSON line; exits 1 if an award was lost or duplicated.

It lives beside the fault suite, whose harness it drives, but pytest does not collect it: its
name does not match `test_*.py`, and it defines no tests (`test_soak.py` checks that it starts).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import anyio

# Run as a script, Python puts this directory on sys.path: the suite's modules are imported as
# the package `tests`, from the root of the repository.
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[2]))

from tests.faults.harness import LoadRun, chaos
from tests.faults.servers import PersistentRedis, PostgresServer, postgres_binaries


async def soak(args: argparse.Namespace) -> int:
    binaries = postgres_binaries()
    if binaries is None:
        sys.exit("soak: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    with tempfile.TemporaryDirectory(prefix="abadges-soak-") as logs:
        async with PostgresServer(binaries) as postgres, PersistentRedis() as redis_server:
            run = LoadRun(
                postgres,
                redis_server,
                pathlib.Path(logs),
                events=args.events,
                seed=args.seed,
                apps=args.apps,
                workers=args.workers,
                concurrency=args.concurrency,
                settle=args.settle,
            )
            report = await run.run("chaos", chaos)
        print(report.summary())
        print("faults by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(run.struck.items())))
        for line in report.differences:
            print(f"  {line}")
        figures = {
            "events": report.events,
            "awards": report.awards,
            "expected": report.expected,
            "lost": report.lost,
            "duplicated": report.duplicated,
            "faults": dict(run.struck),
            "retried_calls": report.retries,
            "worker_deaths": report.worker_deaths,
            "firing_s": round(report.firing, 1),
            "total_s": round(report.seconds, 1),
            "apps": args.apps,
            "workers": args.workers,
            "seed": args.seed,
        }
        print("json: " + json.dumps(figures, sort_keys=True))
        return 0 if report.lost == report.duplicated == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="callers per app process")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--settle", type=float, default=180, help="seconds to wait for the queue")
    sys.exit(anyio.run(soak, parser.parse_args()))


if __name__ == "__main__":
    main()
