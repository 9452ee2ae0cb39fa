"""pinax-badges 3.0.0 on Django 3.2 under the seeded workloads of issue 5 (W1, W2, W3).

Runs in its own virtualenv (benchmarks/pinax/setup makes it):

    benchmarks/.venv-pinax/bin/python benchmarks/pinax/bench.py --database postgresql --workload W1

Each run works in a scratch database (PostgreSQL: `abadges_bench_pinax_<hex>` on 127.0.0.1:5432,
created from the admin database `test` and dropped at the end; SQLite: a temporary file) and
prints one result through `workload.report()`. Only the `possibly_award_badge()` calls are timed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # workload.py, then settings.py

import workload  # noqa: E402

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
PG_ADMIN_DATABASE = "test"
IMPL = "pinax-badges"


@contextlib.contextmanager
def scratch_database(kind: str) -> Iterator[None]:
    """A database of its own for this run, set up for Django and migrated; removed afterwards."""
    if kind == "postgresql":
        import psycopg2

        name = f"abadges_bench_pinax_{secrets.token_hex(6)}"
        admin = psycopg2.connect(dbname=PG_ADMIN_DATABASE, **PG)
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
            os.environ.update(
                BENCH_DB_ENGINE="postgresql",
                BENCH_DB_NAME=name,
                BENCH_DB_HOST=PG["host"],
                BENCH_DB_PORT=str(PG["port"]),
                BENCH_DB_USER=PG["user"],
            )
            try:
                _setup_django()
                yield
            finally:
                _close_connections()
                with admin.cursor() as cursor:
                    # FORCE: a connection left behind by a failed thread does not block the drop.
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()
    else:
        directory = tempfile.mkdtemp(prefix="abadges_bench_pinax_")
        os.environ.update(BENCH_DB_ENGINE="sqlite", BENCH_DB_NAME=str(Path(directory, "db")))
        try:
            _setup_django()
            yield
        finally:
            _close_connections()
            shutil.rmtree(directory, ignore_errors=True)


def _setup_django() -> None:
    import django
    from django.core.management import call_command

    os.environ["DJANGO_SETTINGS_MODULE"] = "settings"
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def _close_connections() -> None:
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


# --- badges (defined once Django is set up: pinax.badges.base imports its models) ---


def points_badge(k: int) -> type:
    """W1's badge `points_<k>`. pinax's award() answers a 1-based level (1 = Bronze) and stores
    it 0-based (BadgeAward.level 0 = Bronze), so workload.w1_level() is returned as it is."""
    from pinax.badges.base import Badge, BadgeAwarded

    class Points(Badge):
        slug = f"points_{k}"
        # pinax replaces the strings by BadgeDetail objects in this list: one list per class.
        levels: ClassVar[list[Any]] = list(workload.LEVELS)
        events: ClassVar[list[str]] = [workload.EVENT]
        multiple = False
        index = k

        def award(self, **state: Any) -> BadgeAwarded | None:
            level = workload.w1_level(self.index, state["user"].points)
            return None if level is None else BadgeAwarded(level=level)

    return Points


def always_badge(slug: str, multiple: bool) -> type:
    """A single-level badge that always awards (W2: multiple; W3: held once)."""
    from pinax.badges.base import Badge, BadgeAwarded

    class Always(Badge):
        levels: ClassVar[list[Any]] = ["Gold"]
        events: ClassVar[list[str]] = [workload.EVENT]

        def award(self, **state: Any) -> BadgeAwarded:
            return BadgeAwarded()

    Always.slug = slug
    Always.multiple = multiple
    return Always


def create_users(count: int) -> list[Any]:
    from django.contrib.auth.models import User

    User.objects.bulk_create([User(username=f"bench{i}") for i in range(count)], batch_size=500)
    return list(User.objects.order_by("id"))


def users_of(stream: workload.Stream) -> list[Any]:
    """The stream's users, created, each holding its starting points in memory."""
    users = create_users(len(stream.points))
    for user, points in zip(users, stream.points, strict=True):
        user.points = points
    return users


# --- running ---


class Calls:
    """The latencies and database errors of one thread's calls."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def call(self, user: Any) -> None:
        from django.db import DatabaseError
        from pinax.badges.registry import badges

        start = time.perf_counter()
        try:
            badges.possibly_award_badge(workload.EVENT, user=user)
        except DatabaseError as error:  # e.g. SQLite's "database is locked": counted, reported
            self.errors += 1
            self.first_error = self.first_error or f"{type(error).__name__}: {error}"
        self.latencies.append(time.perf_counter() - start)


def start_threads(count: int, work: Callable[[int], None]) -> Callable[[], None]:
    """Starts work(0) .. work(count - 1) in threads of their own, each with its own connection
    (opened before work starts, closed at the end); returns a join() that re-raises the first
    failure of any thread."""
    from django.db import connection

    failures: list[BaseException] = []

    def target(i: int) -> None:
        try:
            connection.ensure_connection()
            work(i)
        except BaseException as error:
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()

    def join() -> None:
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    return join


def run_stream(users: list[Any], stream: workload.Stream, threads: int) -> tuple[float, Calls]:
    """Fires the stream's events; with threads > 1, dealt out round-robin, released together."""
    totals = stream.replay()
    events = [
        (user, added, total)
        for (user, added), (_, total) in zip(stream.events, totals, strict=True)
    ]
    calls = [Calls() for _ in range(threads)]

    if threads == 1:
        start = time.perf_counter()
        for index, added, _ in events:
            user = users[index]
            user.points += added
            calls[0].call(user)
        seconds = time.perf_counter() - start
    else:
        barrier = threading.Barrier(threads + 1)
        ends = [0.0] * threads

        def work(i: int) -> None:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return
            for index, _, total in events[i::threads]:
                # A request's own User instance, with the points the stream gives it after this
                # event: two threads may hold events of the same user at once.
                user = copy.copy(users[index])
                user.points = total
                calls[i].call(user)
            ends[i] = time.perf_counter()

        join = start_threads(threads, work)
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            join()
            raise
        start = time.perf_counter()
        join()
        seconds = max(ends) - start
    return seconds, _merge(calls)


def _merge(calls: list[Calls]) -> Calls:
    merged = Calls()
    for one in calls:
        merged.latencies += one.latencies
        merged.errors += one.errors
        merged.first_error = merged.first_error or one.first_error
    return merged


def _errors(calls: Calls) -> dict[str, Any]:
    found: dict[str, Any] = {"errors": calls.errors}
    if calls.first_error:
        found["first_error"] = calls.first_error
    return found


def bench_w1(database: str, users_count: int, events: int, threads: int) -> dict[str, Any]:
    from django.db.models import Count
    from pinax.badges.models import BadgeAward
    from pinax.badges.registry import badges

    for k in range(workload.BADGES):
        badges.register(points_badge(k))
    stream = workload.stream(users_count, events)
    users = users_of(stream)
    seconds, calls = run_stream(users, stream, threads)
    awards = BadgeAward.objects.count()
    held = BadgeAward.objects.values("user", "slug", "level").annotate(n=Count("id")).count()
    return workload.measure(
        "W1", IMPL, database, seconds, calls.latencies, awards, workload.expected_w1(stream),
        threads=threads, duplicates=awards - held, **_errors(calls),
    )  # fmt: skip


def bench_w2(database: str, users_count: int, events: int, threads: int) -> dict[str, Any]:
    from pinax.badges.models import BadgeAward
    from pinax.badges.registry import badges

    badges.register(always_badge("always", multiple=True))
    stream = workload.stream(users_count, events)
    users = users_of(stream)
    seconds, calls = run_stream(users, stream, threads)
    awards = BadgeAward.objects.count()
    return workload.measure(
        "W2", IMPL, database, seconds, calls.latencies, awards, len(stream.events),
        threads=threads, **_errors(calls),
    )  # fmt: skip


def bench_w3(database: str, trials: int, threads: int) -> dict[str, Any]:
    """`threads` callers, one user, one badge held once, released together by a barrier; the
    user's awards are counted, then deleted, between trials."""
    from pinax.badges.models import BadgeAward
    from pinax.badges.registry import badges

    badges.register(always_badge("race", multiple=False))
    (user,) = create_users(1)
    go = threading.Barrier(threads + 1)
    done = threading.Barrier(threads + 1)
    calls = [Calls() for _ in range(threads)]
    spans = [[(0.0, 0.0)] * threads for _ in range(trials)]

    def work(i: int) -> None:
        try:
            for trial in range(trials):
                go.wait()
                start = time.perf_counter()
                calls[i].call(user)
                spans[trial][i] = (start, time.perf_counter())
                done.wait()
        except BaseException:
            go.abort()
            done.abort()
            raise

    join = start_threads(threads, work)
    rows = duplicated = duplicates = 0
    try:
        for _ in range(trials):
            go.wait(timeout=60)
            done.wait(timeout=60)
            held = BadgeAward.objects.filter(user=user, slug="race")
            count = held.count()
            rows += count
            duplicates += max(0, count - 1)
            duplicated += count > 1
            held.delete()
    except BaseException:  # release the threads, then report their failure or this one
        go.abort()
        done.abort()
        join()
        raise
    join()
    # Each trial lasts from its first call's start to its last call's end.
    seconds = sum(
        max(end for _, end in trial) - min(start for start, _ in trial) for trial in spans
    )
    merged = _merge(calls)
    return workload.measure(
        "W3", IMPL, database, seconds, merged.latencies, rows, trials,
        threads=threads, trials=trials, trials_with_duplicates=duplicated, duplicates=duplicates,
        **_errors(merged),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["postgresql", "sqlite"], required=True)
    parser.add_argument("--workload", choices=["W1", "W2", "W3"], required=True)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=300, help="W3 only")
    parser.add_argument("--threads", type=int, help="callers at once (default: 1; W3: 8)")
    args = parser.parse_args(argv)
    threads = args.threads or (8 if args.workload == "W3" else 1)
    with scratch_database(args.database):
        if args.workload == "W1":
            result = bench_w1(args.database, args.users, args.events, threads)
        elif args.workload == "W2":
            result = bench_w2(args.database, args.users, args.events, threads)
        else:
            result = bench_w3(args.database, args.trials, threads)
    workload.report(result)


if __name__ == "__main__":
    main()
