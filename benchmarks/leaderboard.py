"""W5 of issue 15: leaderboards, standings and `stats()` over 1,000,000 awards of 100,000
users, on each database, printing text and JSON lines:

    .venv/bin/python benchmarks/leaderboard.py [--database postgresql sqlite mysql]
        [--users 100000 --awards 1000000] [--repeat 200] [--write-events 1000] [--smoke]

For each database: a scratch database migrated to the head revision; the awards of ten badges
(`SITE_BADGES`: multi-level badges with points per level, a `multiple` badge, a badge with
`expires_after`) made by `plan()` with `random.Random(42)`, a skewed distribution, and loaded
in `awarded_at` order, 50,000 rows a statement (COPY on PostgreSQL, executemany on SQLite and
MariaDB), through the triggers that keep the totals; then ANALYZE (PostgreSQL: VACUUM
ANALYZE), as autovacuum would.

Then, checked before they are timed: the totals equal a recount of the awards table, and the
pages and standings equal those computed in Python from a plain `GROUP BY` of the awards
table. Each query is timed through the public API (`leaderboard()`, `standing()`, `stats()`),
after warm-up, `--repeat` times (fewer when one takes more than `--seconds` in all): p50 and
p99 in ms. The same is then done with a few awards expired and not yet moved (the computed
path), which `expire_awards()` then moves.

Last, what the triggers cost a write, on the loaded database: single events of W1's badges
(one caller, new users) and of W2's `multiple` badge, with revision 0006's triggers and index
of `awarded_at`, then without them (the write path of revision 0005), twice in turn.

PostgreSQL and MariaDB run in scratch databases `abadges_bench_w5_<hex>` of 127.0.0.1 (dropped
at the end, even on failure), SQLite in a temporary file. `--smoke` is 2,000 awards over 200
users, the checks and a few repetitions. A check that fails exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import asyncmy
import asyncpg
import workload
from bench import User, fire, registry_of
from bench_badges import AlwaysBadge, w1_badges

from abadges import Badge, BadgeDetail, BadgeRegistry

UTC = datetime.UTC
DAY = 86_400.0
PG = "postgresql://postgres@127.0.0.1:5432"
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root"}
#: The awards table's columns that a load gives, in this order.
COLUMNS = ["user_id", "slug", "level", "awarded_at", "award_key", "expires_at", "points"]
CHUNK = 50_000
EXPIRES_AFTER = datetime.timedelta(days=400)
#: How many awards, expired and not moved, the computed path gets.
EXPIRED = 10


def badge(slug: str, levels: Sequence[tuple[str, int]], **attributes: Any) -> type[Badge]:
    namespace = {
        "slug": slug,
        "levels": [BadgeDetail(name, points=points) for name, points in levels],
        "events": ["never"],
        "award": lambda self, **state: None,
        **attributes,
    }
    return type(f"{slug.title()}Badge", (Badge,), namespace)


def medals(*points: int) -> list[tuple[str, int]]:
    return list(zip(["Bronze", "Silver", "Gold"], points, strict=True))


#: The streak badge's levels: (days, points).
STREAK = [(7, 1), (30, 2), (90, 3), (180, 5), (365, 8)]
#: A site's ten badges: six of three levels, one of five, one held once by early users, one
#: that expires, and a `multiple` one.
SITE_BADGES = [
    badge("posts", medals(10, 25, 50)),
    badge("comments", medals(5, 15, 40)),
    badge("answers", medals(10, 25, 50)),
    badge("edits", medals(5, 10, 20)),
    badge("reviews", medals(5, 15, 40)),
    badge("votes", medals(2, 5, 10)),
    badge("streak", [(f"{days} days", points) for days, points in STREAK]),
    badge("founder", [("Founder", 100)]),
    badge("event_pass", [("Event pass", 20)], expires_after=EXPIRES_AFTER),
    badge("thanks", [("Thanks", 2)], multiple=True),
]
LEVELED = [b for b in SITE_BADGES if not b.multiple and b.slug not in ("founder", "event_pass")]


def user_id(n: int) -> str:
    return f"u{n:06d}"


Row = tuple[str, str, int, float, str, float | None, int]


def plan(users: int, total: int, now: float, seed: int = 42) -> list[Row]:
    """`total` awards of `users` users, in `awarded_at` order: (user_id, slug, level,
    awarded_at, award_key, expires_at, points), times as seconds since the epoch.

    Each user has an activity from a Pareto distribution (most near 1, a few in the hundreds):
    per badge of `LEVELED`, the levels 1 to L with L = int(random * activity) (capped); the
    first 0.5% of users hold `founder`; 20% `event_pass`; the rest of `total` are `thanks`:
    one for each user who has nothing else, then shared out in proportion to
    min(activity, 300) ** 1.5. 5% of the awards are of the last 7 days."""
    rng = random.Random(seed)
    activity = [rng.paretovariate(1.3) for _ in range(users)]
    rows: list[Row] = []

    def add(user: int, slug: str, level: int, points: int, key: str = "") -> None:
        if rng.random() < 0.05:
            at = now - rng.uniform(60, 6.9 * DAY)
        else:
            at = now - rng.uniform(7.1 * DAY, 365 * DAY)
        expires = at + EXPIRES_AFTER.total_seconds() if slug == "event_pass" else None
        rows.append((user_id(user), slug, level, at, key, expires, points))

    for user in range(users):
        for leveled in LEVELED:
            top = min(len(leveled.levels), int(rng.random() * activity[user] * 0.9))
            for level in range(1, top + 1):
                add(user, leveled.slug, level, leveled.levels[level - 1].points)
        if user < max(1, users // 200):
            add(user, "founder", 1, 100)
        if rng.random() < 0.2:
            add(user, "event_pass", 1, 20)
    # Every user holds something: a `thanks` for those whose levels gave none.
    holding = {row[0] for row in rows}
    thanked = [user for user in range(users) if user_id(user) not in holding]
    left = total - len(rows) - len(thanked)
    if left < 0:
        raise ValueError(f"{users} users' levels make {total - left} awards, above {total}.")
    weights = [min(a, 300.0) ** 1.5 for a in activity]
    thanked += rng.choices(range(users), weights=weights, k=left)
    for key, user in enumerate(thanked):
        add(user, "thanks", 1, 2, f"{key:032x}")
    rows.sort(key=lambda row: row[3])
    return rows


# Each database, as a plain driver connection: loading, DDL, and the checks' recounts. -------


class Raw:
    """A driver connection; SQL is written with `?` placeholders."""

    kind: str

    def when(self, at: float) -> Any:
        return datetime.datetime.fromtimestamp(at, UTC)

    def row(self, row: Row) -> tuple[Any, ...]:
        user, slug, level, at, key, expires, points = row
        return (user, slug, level, self.when(at), key, None if expires is None else
                self.when(expires), points)  # fmt: skip

    async def execute(self, sql: str, *params: Any) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def load(self, rows: Sequence[Row]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class PostgresRaw(Raw):
    kind = "postgresql"

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    @staticmethod
    def numbered(sql: str) -> str:
        parts = sql.split("?")
        return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))

    async def execute(self, sql: str, *params: Any) -> None:
        await self.connection.execute(self.numbered(sql), *params)

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.connection.fetch(self.numbered(sql), *params)]

    async def load(self, rows: Sequence[Row]) -> None:
        records = [self.row(row) for row in rows]
        await self.connection.copy_records_to_table(
            "abadges_awards", records=records, columns=COLUMNS
        )

    async def close(self) -> None:
        await self.connection.close()


class SQLiteRaw(Raw):
    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)

    def when(self, at: float) -> Any:
        # As abadges' SQLite store writes it: naive UTC text.
        return (
            datetime.datetime.fromtimestamp(at, UTC)
            .replace(tzinfo=None)
            .isoformat(" ", "microseconds")
        )

    async def execute(self, sql: str, *params: Any) -> None:
        self.connection.execute(sql, params)

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.connection.execute(sql, params).fetchall()

    async def load(self, rows: Sequence[Row]) -> None:
        marks = ", ".join("?" * len(COLUMNS))
        self.connection.execute("BEGIN")
        self.connection.executemany(
            f"INSERT INTO abadges_awards ({', '.join(COLUMNS)}) VALUES ({marks})",
            [self.row(row) for row in rows],
        )
        self.connection.execute("COMMIT")

    async def close(self) -> None:
        self.connection.close()


class MySQLRaw(Raw):
    kind = "mysql"

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def when(self, at: float) -> Any:
        return datetime.datetime.fromtimestamp(at, UTC).replace(tzinfo=None)

    async def execute(self, sql: str, *params: Any) -> None:
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql.replace("?", "%s"), params or None)

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql.replace("?", "%s"), params or None)
            return [
                tuple(v.decode() if isinstance(v, bytes) else v for v in row)
                for row in await cursor.fetchall()
            ]

    async def load(self, rows: Sequence[Row]) -> None:
        marks = ", ".join(["%s"] * len(COLUMNS))
        async with self.connection.cursor() as cursor:
            await cursor.execute("BEGIN")
            # asyncmy sends an executemany of an INSERT ... VALUES as multi-row inserts.
            await cursor.executemany(
                f"INSERT INTO abadges_awards ({', '.join(COLUMNS)}) VALUES ({marks})",
                [self.row(row) for row in rows],
            )
            await cursor.execute("COMMIT")

    async def close(self) -> None:
        self.connection.close()


@contextlib.asynccontextmanager
async def database(kind: str) -> AsyncIterator[tuple[str, Raw]]:
    """A URL to an empty scratch database of `kind` and a driver connection to it; the
    database is dropped afterwards, whatever happened."""
    name = f"abadges_bench_w5_{secrets.token_hex(6)}"
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="abadges-bench-") as directory:
            path = f"{directory}/bench.sqlite3"
            raw = SQLiteRaw(path)
            try:
                yield f"sqlite+aiosqlite:///{path}", raw
            finally:
                await raw.close()
        return
    if kind == "postgresql":
        admin = await asyncpg.connect(f"{PG}/test")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                raw = PostgresRaw(await asyncpg.connect(f"{PG}/{name}"))
                try:
                    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", raw
                finally:
                    await raw.close()
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        return
    admin = await asyncmy.connect(**MYSQL, autocommit=True)
    try:
        async with admin.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE {name}")
        try:
            my = MySQLRaw(await asyncmy.connect(**MYSQL, db=name, autocommit=True))
            try:
                yield f"mysql+asyncmy://root@127.0.0.1:3306/{name}", my
            finally:
                await my.close()
        finally:
            async with admin.cursor() as cursor:
                await cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        admin.close()


# The checks: what the queries must give, from the awards table. ---------------------------------

HELD = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"


async def recount_mismatches(raw: Raw) -> int:
    """How many rows of the totals and the level counts (level 0: the holders) differ from a
    recount of the awards."""
    counted = "FROM abadges_awards WHERE revoked_at IS NULL"
    recount: dict[tuple[Any, ...], tuple[int, int]] = {}
    for user, slug, points, n in await raw.fetch(
        f"SELECT user_id, slug, SUM(points), COUNT(*) {counted} GROUP BY user_id, slug"
    ):
        recount[user, slug] = (int(points), int(n))
        all_points, all_n = recount.get((user, ""), (0, 0))
        recount[user, ""] = (all_points + int(points), all_n + int(n))
    kept = {
        (user, slug): (int(points), int(n))
        for user, slug, points, n in await raw.fetch(
            "SELECT user_id, slug, points, awards FROM abadges_totals"
        )
        if points or n
    }
    levels = {
        (slug, int(level)): int(n)
        for slug, level, n in await raw.fetch(
            f"SELECT slug, level, COUNT(*) {counted} GROUP BY slug, level"
        )
    }
    for _, slug in recount:  # level 0: the holders of each badge, and of any ("")
        levels[slug, 0] = levels.get((slug, 0), 0) + 1
    kept_levels = {
        (slug, int(level)): int(n)
        for slug, level, n in await raw.fetch(
            "SELECT slug, level, SUM(awards) FROM abadges_level_counts GROUP BY slug, level"
        )
        if n
    }
    return len(set(recount.items()) ^ set(kept.items())) + len(
        set(levels.items()) ^ set(kept_levels.items())
    )


async def scores(
    raw: Raw, now: float, slug: str | None = None, since: float | None = None
) -> dict[str, tuple[int, int]]:
    """Each user's (points, awards) held now, of `slug` or all, awarded since `since`."""
    sql = f"SELECT user_id, SUM(points), COUNT(*) FROM abadges_awards WHERE {HELD}"
    params: list[Any] = [raw.when(now)]
    if slug is not None:
        sql += " AND slug = ?"
        params.append(slug)
    if since is not None:
        sql += " AND awarded_at >= ?"
        params.append(raw.when(since))
    rows = await raw.fetch(sql + " GROUP BY user_id", *params)
    return {user: (int(points), int(n)) for user, points, n in rows}


def ranked(found: dict[str, tuple[int, int]], by: str) -> list[tuple[int, str, int, int]]:
    """The leaderboard of `found` as (rank, user_id, points, awards): ties share a rank and
    are listed by user id."""
    column = 0 if by == "points" else 1
    order = sorted(found.items(), key=lambda item: (-item[1][column], item[0]))
    board: list[tuple[int, str, int, int]] = []
    for place, (user, (points, n)) in enumerate(order, start=1):
        tied = board and (points, n)[column] == (board[-1][2], board[-1][3])[column]
        board.append((board[-1][0] if tied else place, user, points, n))
    return board


def rows_of(standings: Sequence[Any]) -> list[tuple[int, str, int, int]]:
    return [(s.rank, s.user_id, s.points, s.awards) for s in standings]


async def expected_stats(raw: Raw, now: float) -> dict[tuple[str, int], int]:
    multiple = {b.slug for b in SITE_BADGES if b.multiple}
    rows = await raw.fetch(
        f"SELECT slug, level, COUNT(*), COUNT(DISTINCT user_id) FROM abadges_awards "
        f"WHERE {HELD} GROUP BY slug, level",
        raw.when(now),
    )
    return {(slug, int(level)): int(u if slug in multiple else n) for slug, level, n, u in rows}


# Timing. ------------------------------------------------------------------------------------------


async def timed(
    call: Callable[[], Awaitable[Any]], repeat: int, budget: float, warm_up: int = 5
) -> tuple[list[float], Any]:
    """Latencies in seconds of `repeat` calls after `warm_up` (at least 20 once `budget`
    seconds have gone), and the last result."""
    result = None
    for _ in range(warm_up):
        result = await call()
    latencies: list[float] = []
    started = time.perf_counter()
    while len(latencies) < repeat:
        start = time.perf_counter()
        result = await call()
        latencies.append(time.perf_counter() - start)
        if len(latencies) >= 20 and time.perf_counter() - started > budget:
            break
    return latencies, result


def report(result: dict[str, Any]) -> None:
    """A line of text, then the result as a JSON line (prefixed `json: `)."""
    if result["workload"] == "W5":
        text = f"W5 {result['database']:<10} {result['query']:<34}"
        if "p50_ms" in result:
            text += f" p50 {result['p50_ms']:>9.3f} ms  p99 {result['p99_ms']:>9.3f} ms"
            text += f"  n={result['n']}"
        if "check" in result:
            text += f"  check {'ok' if result['check'] else 'MISMATCH'}"
        if "seconds" in result:
            text += f" {result['seconds']:.1f} s"
        if "awards" in result:
            verdict = "ok" if result["ok"] else "MISMATCH"
            text += f"  awards {result['awards']:,}/{result['expected']:,} {verdict}"
        if result.get("failed"):
            text += f"  failed: {', '.join(result['failed'])}"
        if result.get("error"):
            text += f"  error: {result['error']}"
        print(text)
    else:
        workload.report(result)  # Its line of text and its JSON line.
        return
    print("json: " + json.dumps(result, sort_keys=True, default=str))
    sys.stdout.flush()


# The run of one database. ---------------------------------------------------------------------


async def w5(kind: str, args: argparse.Namespace) -> bool:
    """Load, check, time the queries and the writes on a database of `kind`; all checks ok?"""
    now = time.time()
    base = {"workload": "W5", "impl": "abadges", "database": kind, "size": args.awards}
    started = time.perf_counter()
    rows = plan(args.users, args.awards, now)
    report({**base, "query": "plan", "seconds": round(time.perf_counter() - started, 1)})
    async with database(kind) as (url, raw), registry_of(url, SITE_BADGES) as registry:
        started = time.perf_counter()
        for start in range(0, len(rows), CHUNK):
            await raw.load(rows[start : start + CHUNK])
        report({**base, "query": "load", "seconds": round(time.perf_counter() - started, 1)})
        started = time.perf_counter()
        await analyze(raw)
        report({**base, "query": "analyze", "seconds": round(time.perf_counter() - started, 1)})
        failed: list[str] = []
        awards = int((await raw.fetch("SELECT COUNT(*) FROM abadges_awards"))[0][0])
        if await recount_mismatches(raw):
            failed.append("totals = recount")
        # The users at the top, the middle and the bottom of the leaderboard by points.
        everyone = ranked(await scores(raw, now), "points")
        picks = {"top": everyone[0][1], "middle": everyone[len(everyone) // 2][1]}
        picks["bottom"] = everyone[-1][1]
        deep = min(50_000, len(everyone) // 2)
        week = time.time() - 7 * DAY
        slug = SITE_BADGES[0].slug
        expectations = await expected(raw, slug, week)
        queries: dict[str, tuple[Callable[[], Awaitable[Any]], Any]] = {
            "leaderboard(limit=20)": (
                lambda: registry.leaderboard(limit=20), expectations["points"][:20]),
            f"leaderboard(offset={deep:,})": (
                lambda: registry.leaderboard(limit=20, offset=deep),
                expectations["points"][deep : deep + 20]),
            'leaderboard(by="awards")': (
                lambda: registry.leaderboard(limit=20, by="awards"),
                expectations["awards"][:20]),
            f'leaderboard(slug="{slug}")': (
                lambda: registry.leaderboard(limit=20, slug=slug), expectations["slug"][:20]),
            "leaderboard(since=7 days ago)": (
                lambda: registry.leaderboard(limit=20, since=at(week)),
                expectations["since"][:20]),
        }  # fmt: skip
        for where, user in picks.items():
            place = next(s for s in expectations["points"] if s[1] == user)
            queries[f"standing({where} user)"] = (
                lambda user=user: standing(registry, user),
                [place],
            )
        queries["stats()"] = (registry.stats, await expected_stats(raw, time.time()))
        failed += await check_and_time(base, queries, args)

        # The computed path: a few awards of `event_pass` expired and not yet moved.
        held_pass = {r[0] for r in rows if r[1] == "event_pass"}
        chosen = [everyone[i][1] for i in range(0, len(everyone), max(1, len(everyone) // 50))]
        lapsed = [u for u in chosen if u not in held_pass][:EXPIRED]
        for user in lapsed:
            await raw.execute(
                "INSERT INTO abadges_awards (user_id, slug, level, awarded_at, award_key, "
                "expires_at, points) VALUES (?, 'event_pass', 1, ?, '', ?, 20)",
                user, raw.when(time.time() - 401 * DAY), raw.when(time.time() - 3600),
            )  # fmt: skip
        expectations = await expected(raw, slug, week)
        middle = picks["middle"]
        place = next(s for s in expectations["points"] if s[1] == middle)
        queries = {
            "expired unmoved: leaderboard(limit=20)": (
                lambda: registry.leaderboard(limit=20), expectations["points"][:20]),
            "expired unmoved: standing(middle user)": (
                lambda: standing(registry, middle), [place]),
            "expired unmoved: stats()": (registry.stats, await expected_stats(raw, time.time())),
        }  # fmt: skip
        failed += await check_and_time(base, queries, args)
        moved = await registry.expire_awards()
        if moved != len(lapsed) or await recount_mismatches(raw):
            failed.append("expire_awards() and the totals after it")
        report({**base, "query": "checks", "awards": awards, "expected": args.awards,
                "ok": awards == args.awards and not failed, "failed": failed})  # fmt: skip
        await write_cost(kind, url, raw, args)
    return awards == args.awards and not failed


def at(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, UTC)


async def standing(registry: BadgeRegistry, user: str) -> list[Any]:
    return [await registry.standing(user)]


async def expected(raw: Raw, slug: str, since: float) -> dict[str, list[tuple[int, str, int, int]]]:
    now = time.time()
    everyone = await scores(raw, now)
    return {
        "points": ranked(everyone, "points"),
        "awards": ranked(everyone, "awards"),
        "slug": ranked(await scores(raw, now, slug=slug), "points"),
        "since": ranked(await scores(raw, now, since=since), "points"),
    }


async def check_and_time(
    base: dict[str, Any],
    queries: dict[str, tuple[Callable[[], Awaitable[Any]], Any]],
    args: argparse.Namespace,
) -> list[str]:
    """Check then time each query: the names of those whose result was wrong."""
    failed = []
    for name, (call, want) in queries.items():
        got = await call()
        if name.endswith("stats()"):
            ok = {(s.slug, s.level): s.holders for s in got if s.holders} == want
        else:
            ok = rows_of(got) == want
        if not ok:
            failed.append(name)
        latencies, _ = await timed(call, args.repeat, args.seconds, args.warm_up)
        report({**base, "query": name, "check": ok, "n": len(latencies),
                "p50_ms": round(statistics.median(latencies) * 1000, 3),
                "p99_ms": workload.percentile(latencies, 0.99)})  # fmt: skip
    return failed


async def analyze(raw: Raw) -> None:
    tables = ["abadges_awards", "abadges_totals", "abadges_level_counts"]
    if raw.kind == "postgresql":
        for table in tables:
            await raw.execute(f"VACUUM ANALYZE {table}")
    elif raw.kind == "sqlite":
        await raw.execute("ANALYZE")
    else:
        await raw.fetch(f"ANALYZE TABLE {', '.join(tables)}")


# What the triggers cost a write. ------------------------------------------------------------------

MIGRATION = importlib.import_module("abadges.storage.migrations.versions.0006_totals")


async def set_triggers(raw: Raw, present: bool) -> None:
    """Revision 0006's triggers and index of `awarded_at` on the awards table, or neither."""
    m = MIGRATION
    if not present:
        for trigger in m.TRIGGERS.values():
            on = f" ON {m.AWARDS}" if raw.kind == "postgresql" else ""
            await raw.execute(f"DROP TRIGGER {trigger}{on}")
        on = f" ON {m.AWARDS}" if raw.kind == "mysql" else ""
        await raw.execute(f"DROP INDEX {m.TIME_INDEX}{on}")
        return
    statements = {"postgresql": m._postgresql, "sqlite": m._sqlite}.get(raw.kind, m._mysql)()
    for statement in statements:
        if not statement.startswith("CREATE FUNCTION"):  # PostgreSQL's functions stay.
            await raw.execute(statement)
    await raw.execute(f"CREATE INDEX {m.TIME_INDEX} ON {m.AWARDS} (awarded_at)")


async def write_cost(kind: str, url: str, raw: Raw, args: argparse.Namespace) -> None:
    """Single events, one caller, on the loaded database: W1's badges (new users, so that
    they record) and W2's `multiple` badge, with the triggers and without, twice in turn."""
    stream = workload.stream(users=1000, events=args.write_events)
    expected_w1 = workload.expected_w1(stream)
    async with registry_of(url, [*w1_badges(deferred=False), AlwaysBadge]) as registry:
        for run, present in enumerate([True, False, True, False]):
            if run:
                await set_triggers(raw, present)
            variant = "0006 (triggers)" if present else "0005 (no triggers)"
            for name in ("W1", "W2"):
                prefix = f"{name}-{run}-"

                async def call(user: int, points: int, prefix: str = prefix) -> None:
                    await registry.possibly_award_badge(
                        workload.EVENT, user=User(f"{prefix}{user}", points)
                    )

                seconds, latencies = await fire(call, stream.replay(), 1)
                slugs = ["always"] if name == "W2" else [f"points_{k}" for k in range(10)]
                count = await raw.fetch(
                    f"SELECT COUNT(*) FROM abadges_awards WHERE user_id LIKE '{prefix}%' "
                    f"AND slug IN ({', '.join(repr(slug) for slug in slugs)})"
                )
                result = workload.measure(
                    f"W5-write {name}", "abadges", kind, seconds, latencies, int(count[0][0]),
                    expected_w1 if name == "W1" else args.write_events,
                    variant=variant, round=run // 2 + 1, size=args.awards,
                )  # fmt: skip
                report(result)


async def main(args: argparse.Namespace) -> int:
    failed = False
    for kind in args.database:
        try:
            ok = await w5(kind, args)
        except Exception as exc:
            ok = False
            report({"workload": "W5", "impl": "abadges", "database": kind, "size": args.awards,
                    "query": "checks", "awards": 0, "expected": args.awards, "ok": False,
                    "error": repr(exc)})  # fmt: skip
        failed |= not ok
    return 1 if failed else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", nargs="+", default=["postgresql", "sqlite", "mysql"])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--awards", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per query")
    parser.add_argument("--seconds", type=float, default=10.0, help="a query's time budget")
    parser.add_argument("--warm-up", type=int, default=5, help="untimed calls first")
    parser.add_argument("--write-events", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="2,000 awards over 200 users")
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.awards, args.repeat, args.warm_up, args.write_events = 200, 2000, 3, 1, 20
    return args


if __name__ == "__main__":
    sys.exit(anyio.run(main, parse()))
