"""The example apps over real HTTP, each on every database, with a real worker process.

Starlette and Quart run under uvicorn in this process, aiohttp under its own test server; the
worker is `arq abadges.worker.Settings` with `ABADGES_BADGES=examples.badges`.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import os
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio
import uvicorn
from aiohttp.test_utils import TestServer

from abadges import badges
from abadges.tables import awards, history
from abadges.testing import free_port
from examples import aiohttp_app, quart_app, starlette_app, store
from tests.support import award_jobs, worker

ROOT = pathlib.Path(__file__).parents[2]
FRAMEWORKS = ["starlette", "quart", "aiohttp"]
FIRST_DAY = datetime.date(2024, 5, 1)


@pytest.fixture
async def site_env(
    database_url: str, redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Empty example tables in `database_url`; the environment of the app and the worker."""
    monkeypatch.setenv("ABADGES_DATABASE_URL", database_url)
    monkeypatch.setenv("ABADGES_REDIS_URL", redis_url)
    monkeypatch.setenv("ABADGES_QUEUE_NAME", queue_name)
    async with badges.lifespan():
        await store.create_tables()
        for table in (awards, history, store.users, store.visits):
            await badges.database.execute(table.delete())
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ABADGES_BADGES": "examples.badges",
        "ABADGES_USER_LOADER": "examples.store:load_user",
    }


@contextlib.asynccontextmanager
async def serve(framework: str) -> AsyncIterator[httpx.AsyncClient]:
    """The framework's example app on a real port, lifespan included; a client for it."""
    if framework == "aiohttp":
        server = TestServer(aiohttp_app.create_app(), host="127.0.0.1")
        await server.start_server()
        try:
            async with httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
                yield client
        finally:
            await server.close()
        return
    app = starlette_app.app if framework == "starlette" else quart_app.app
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uvicorn_server = uvicorn.Server(config)
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(uvicorn_server.serve)
        with anyio.fail_after(10):
            while not uvicorn_server.started:  # noqa: ASYNC110 - uvicorn offers no event.
                await anyio.sleep(0.02)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield client
        finally:
            uvicorn_server.should_exit = True


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: Any = None, status: int = 200
) -> Any:
    response = await client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


async def slugs_held(client: httpx.AsyncClient, user: str) -> list[str]:
    return [
        award["slug"] for award in (await call(client, "GET", f"/users/{user}/badges"))["awards"]
    ]


async def wait_for_addict(client: httpx.AsyncClient, user: str) -> None:
    with anyio.fail_after(30):
        while "addict" not in await slugs_held(client, user):  # noqa: ASYNC110
            await anyio.sleep(0.05)


def expires_a_week_after(award: dict[str, Any]) -> bool:
    """Does the award, as the apps give it, expire 7 days after it was awarded?"""
    awarded_at = datetime.datetime.fromisoformat(award["awarded_at"])
    assert awarded_at.utcoffset() is not None
    expires_at = datetime.datetime.fromisoformat(award["expires_at"])
    return expires_at - awarded_at == datetime.timedelta(days=7)


async def queued(redis_url: str, queue_name: str) -> int:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        return len(award_jobs(await client.zrange(queue_name, 0, -1)))
    finally:
        await client.aclose()


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_app_awards_inline_and_deferred_badges(
    framework: str, site_env: dict[str, str], redis_url: str, tmp_path: pathlib.Path
) -> None:
    log = tmp_path / "worker.log"
    async with serve(framework) as client:
        async with worker(site_env, log) as process:
            # Inline badges: recorded in the request, and in its response.
            steps = [
                (3000, 3000, ["Windfall"]),
                (2500, 5500, ["Bronze", "Windfall"]),
                (500, 6000, []),
                (2500, 8500, ["Silver", "Windfall"]),
                (3000, 11500, ["Gold", "Windfall"]),
            ]
            for points, total, names in steps:
                body = await call(client, "POST", "/users/ana/points", {"points": points})
                assert (body["user"], body["points"]) == ("ana", total)
                assert sorted(award["name"] for award in body["awarded"]) == names

            # Deferred: nothing in the request; the worker awards bob, who visited every day
            # of May 2024 but the 31st. It only can on the day frozen in the request. The
            # inline weekly badge comes with the first visit, and is held for a week.
            days = [FIRST_DAY + datetime.timedelta(days=n) for n in range(30)]
            for user, visited in (("cy", days[:14] + days[15:]), ("bob", days)):
                for n, day in enumerate(visited):
                    body = await call(
                        client, "POST", f"/users/{user}/visits", {"day": day.isoformat()}
                    )
                    assert (body["user"], body["day"]) == (user, day.isoformat())
                    if n == 0:
                        [weekly] = body["awarded"]
                        assert (weekly["slug"], weekly["name"]) == ("weekly", "This week")
                        assert (weekly["source"], weekly["granted_by"]) == ("event", None)
                        assert expires_a_week_after(weekly)
                    else:
                        assert body["awarded"] == []
            await wait_for_addict(client, "bob")
        # SIGTERM lets the worker finish the jobs it holds: every visit has been evaluated.
        assert process.returncode == 0, log.read_text()
        assert await queued(redis_url, site_env["ABADGES_QUEUE_NAME"]) == 0
        assert "Traceback" not in log.read_text()

        ana = await call(client, "GET", "/users/ana/badges")
        assert ana["user"] == "ana"
        assert ana["count"] == 7
        newest = ana["awards"][0]
        assert (newest["slug"], newest["level"]) in {("points", 3), ("windfall", 1)}
        assert collections.Counter((a["slug"], a["level"]) for a in ana["awards"]) == {
            ("windfall", 1): 4,
            ("points", 1): 1,
            ("points", 2): 1,
            ("points", 3): 1,
        }
        gold = next(a for a in ana["awards"] if a["level"] == 3)
        assert gold["name"] == "Gold"
        assert gold["description"] == "Over 10,000 points"
        assert datetime.datetime.fromisoformat(gold["awarded_at"]).utcoffset() is not None
        assert {k: gold[k] for k in ("source", "granted_by", "reason", "expires_at")} == {
            "source": "event",
            "granted_by": None,
            "reason": None,
            "expires_at": None,
        }
        bob = await call(client, "GET", "/users/bob/badges")
        assert [(a["slug"], a["name"], a["source"]) for a in bob["awards"]] == [
            ("addict", "Addict", "deferred"),
            ("weekly", "This week", "event"),
        ]
        assert bob["awards"][0]["expires_at"] is None
        assert expires_a_week_after(bob["awards"][1])
        cy = await call(client, "GET", "/users/cy/badges")
        assert (cy["user"], cy["count"]) == ("cy", 1)
        assert [a["slug"] for a in cy["awards"]] == ["weekly"]

        assert await call(client, "GET", "/badges") == [
            {
                "slug": "points",
                "multiple": False,
                "deferred": False,
                "temporary": False,
                "replaces_lower": False,
                "expires_after": None,
                "levels": [
                    {
                        "level": 1,
                        "name": "Bronze",
                        "description": "Over 5,000 points",
                        "awarded": 1,
                    },
                    {
                        "level": 2,
                        "name": "Silver",
                        "description": "Over 7,500 points",
                        "awarded": 1,
                    },
                    {"level": 3, "name": "Gold", "description": "Over 10,000 points", "awarded": 1},
                ],
            },
            {
                "slug": "windfall",
                "multiple": True,
                "deferred": False,
                "temporary": False,
                "replaces_lower": False,
                "expires_after": None,
                "levels": [
                    {
                        "level": 1,
                        "name": "Windfall",
                        "description": "1,000 points or more at once",
                        "awarded": 4,
                    }
                ],
            },
            {
                "slug": "addict",
                "multiple": False,
                "deferred": True,
                "temporary": False,
                "replaces_lower": False,
                "expires_after": None,
                "levels": [
                    {
                        "level": 1,
                        "name": "Addict",
                        "description": "Visited every day for 30 days",
                        "awarded": 1,
                    }
                ],
            },
            {
                "slug": "weekly",
                "multiple": False,
                "deferred": False,
                "temporary": False,
                "replaces_lower": False,
                "expires_after": 7 * 24 * 60 * 60,
                "levels": [
                    {
                        "level": 1,
                        "name": "This week",
                        "description": "Visited in the last 7 days",
                        "awarded": 2,
                    }
                ],
            },
        ]
        silver = await call(client, "GET", "/badges/points/2")
        assert [holder["user"] for holder in silver["holders"]] == ["ana"]
        assert {k: silver[k] for k in ("slug", "level", "name", "description")} == {
            "slug": "points",
            "level": 2,
            "name": "Silver",
            "description": "Over 7,500 points",
        }
        windfall = await call(client, "GET", "/badges/windfall/1")
        times = [holder["awarded_at"] for holder in windfall["holders"]]
        assert len(times) == 4
        assert times == sorted(times, reverse=True)
        addict = await call(client, "GET", "/badges/addict/1")
        assert [holder["user"] for holder in addict["holders"]] == ["bob"]
        weekly = await call(client, "GET", "/badges/weekly/1")
        assert [holder["user"] for holder in weekly["holders"]] == ["bob", "cy"]

        if framework == "starlette":
            board = await client.get("/")
            assert board.headers["content-type"].startswith("text/html")
            assert board.text.count("<tr>") == 7  # The header and one row per level.
            assert "<td>Addict</td><td>Visited every day for 30 days</td><td>1</td>" in board.text
            # Each holder once, linked to their page.
            assert '<td>4</td><td><a href="/users/ana">ana</a></td>' in board.text
            assert (
                '<td>2</td><td><a href="/users/bob">bob</a>, <a href="/users/cy">cy</a></td>'
                in board.text
            )


REFUSED = [
    ("POST", "/users/ana/points", b"{points: 5}", 400, "The request body must be a JSON object."),
    ("POST", "/users/ana/points", b"[5]", 400, "The request body must be a JSON object; got list."),
    (
        "POST",
        "/users/ana/points",
        b'{"points": "5"}',
        400,
        "'points' must be a whole number; got \"5\".",
    ),
    (
        "POST",
        "/users/ana/points",
        b'{"points": true}',
        400,
        "'points' must be a whole number; got true.",
    ),
    ("POST", "/users/ana/points", b"{}", 400, "'points' must be a whole number; got null."),
    (
        "POST",
        "/users/ana/points",
        b'{"points": 0}',
        400,
        "points must be from 1 to 1,000,000; got 0.",
    ),
    (
        "POST",
        "/users/a%20b/points",
        b'{"points": 5}',
        400,
        "User ids are 1 to 64 letters, digits, '_', '.' or '-'; got 'a b'.",
    ),
    (
        "POST",
        "/users/bob/visits",
        b'{"day": "2024-13-01"}',
        400,
        "day must be a date like 2024-05-01; got '2024-13-01'.",
    ),
    (
        "POST",
        "/users/bob/visits",
        b'{"day": 20240501}',
        400,
        "'day' must be a string; got 20240501.",
    ),
    (
        "GET",
        "/badges/nope/1",
        b"",
        404,
        "No badge with slug 'nope' is registered; "
        "registered slugs: ['addict', 'points', 'weekly', 'windfall'].",
    ),
    (
        "GET",
        "/badges/points/4",
        b"",
        404,
        "Badge 'points' has 3 level(s); level 4 is out of range.",
    ),
    (
        "GET",
        "/badges/points/x",
        b"",
        404,
        "Badge 'points' has 3 level(s); level 'x' is out of range.",
    ),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_without_redis_a_visit_is_recorded_and_answered_503(
    framework: str, site_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    monkeypatch.setenv("ABADGES_REDIS_URL", dead)
    async with serve(framework) as client:
        response = await client.post("/users/bob/visits", json={"day": "2024-05-01"})
        assert response.status_code == 503
        assert response.json()["error"].startswith(
            "The visit is recorded, but its badges could not be queued: Redis at "
            f"{dead} did not take the job"
        )
        visits = await badges.database.fetch_all(store.visits.select())
        assert [(row[0], str(row[1])) for row in visits] == [("bob", "2024-05-01")]
        # The inline weekly badge was recorded before the deferred ones failed to be queued.
        assert await slugs_held(client, "bob") == ["weekly"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_app_refuses_bad_input_and_writes_nothing(
    framework: str, site_env: dict[str, str], redis_url: str
) -> None:
    async with serve(framework) as client:
        for method, path, content, status, message in REFUSED:
            response = await client.request(method, path, content=content)
            assert (response.status_code, response.json()) == (status, {"error": message}), path
        for table in (awards, history, store.users, store.visits):
            assert await badges.database.fetch_all(table.select()) == []
    assert await queued(redis_url, site_env["ABADGES_QUEUE_NAME"]) == 0


def changes_of(page: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(action, slug, level, name, source, by, reason) of each change of a history page."""
    fields = ("action", "slug", "level", "name", "source", "by", "reason")
    return [tuple(change[field] for field in fields) for change in page["changes"]]


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_history_shows_what_was_earned_granted_and_revoked_newest_first(
    framework: str, site_env: dict[str, str]
) -> None:
    async with serve(framework) as client:
        await call(client, "POST", "/users/ana/points", {"points": 6000})  # Bronze, Windfall
        await call(client, "POST", "/users/ana/visits", {"day": "2024-05-01"})  # This week
        page = await call(client, "GET", "/users/ana/history")
        assert page["user"] == "ana"
        earned = changes_of(page)
        assert earned[0] == ("granted", "weekly", 1, "This week", "event", None, None)
        # Both in the points' request: which of the two was written first is not the point.
        assert sorted(earned[1:]) == [
            ("granted", "points", 1, "Bronze", "event", None, None),
            ("granted", "windfall", 1, "Windfall", "event", None, None),
        ]
        for change in page["changes"]:
            assert datetime.datetime.fromisoformat(change["at"]).utcoffset() is not None

        # A moderator grants Gold by hand, then takes the windfall away.
        help_desk = {"badge": "points", "level": 3, "by": "mod:7", "reason": "Ran the help desk"}
        body = await call(client, "POST", "/users/ana/grants", help_desk, status=201)
        gold = body["awarded"]
        assert {k: gold[k] for k in ("slug", "level", "name", "description", "source")} == {
            "slug": "points",
            "level": 3,
            "name": "Gold",
            "description": "Over 10,000 points",
            "source": "manual",
        }
        assert (gold["granted_by"], gold["reason"], gold["expires_at"]) == (
            "mod:7",
            "Ran the help desk",
            None,
        )
        # Held already: nothing is recorded.
        assert await call(client, "POST", "/users/ana/grants", help_desk, status=200) == {
            "awarded": None
        }
        taken = {"badge": "windfall", "by": "mod:9", "reason": "Points from a bug"}
        assert await call(client, "POST", "/users/ana/revocations", taken) == {"revoked": 1}
        assert await call(client, "POST", "/users/ana/revocations", taken) == {"revoked": 0}

        page = await call(client, "GET", "/users/ana/history")
        assert changes_of(page) == [
            ("revoked", "windfall", 1, "Windfall", "event", "mod:9", "Points from a bug"),
            ("granted", "points", 3, "Gold", "manual", "mod:7", "Ran the help desk"),
            *earned,
        ]
        assert page["changes"][1]["at"] == gold["awarded_at"]
        paged = await call(client, "GET", "/users/ana/history?limit=2&offset=1")
        assert paged["changes"] == page["changes"][1:3]
        assert (await call(client, "GET", "/users/ana/history?offset=5"))["changes"] == []
        assert len((await call(client, "GET", "/users/ana/history?limit=1"))["changes"]) == 1

        held = (await call(client, "GET", "/users/ana/badges"))["awards"]
        assert [(a["slug"], a["level"], a["source"], a["granted_by"]) for a in held] == [
            ("points", 3, "manual", "mod:7"),
            ("weekly", 1, "event", None),
            ("points", 1, "event", None),
        ]
        assert held[0] == gold
        assert expires_a_week_after(held[1])

        # A grant of a badge with one level needs none; the weekly badge's expires.
        body = await call(client, "POST", "/users/bob/grants", {"badge": "weekly"}, status=201)
        assert (body["awarded"]["source"], body["awarded"]["granted_by"]) == ("manual", None)
        assert expires_a_week_after(body["awarded"])
        assert changes_of(await call(client, "GET", "/users/bob/history")) == [
            ("granted", "weekly", 1, "This week", "manual", None, None)
        ]
        assert await call(client, "GET", "/users/nobody/history") == {
            "user": "nobody",
            "changes": [],
        }

        # The history keeps the changes of a badge, and of a level, no longer registered.
        renamed = history.update().where(history.c.user_id == "ana")
        await badges.database.execute(
            renamed.where(history.c.slug == "windfall").values(slug="retired")
        )
        await badges.database.execute(
            renamed.where(history.c.slug == "points", history.c.level == 3).values(level=4)
        )
        page = await call(client, "GET", "/users/ana/history?limit=2")
        assert [(c["slug"], c["level"], c["name"]) for c in page["changes"]] == [
            ("retired", 1, None),
            ("points", 4, None),
        ]


async def stored_rows() -> list[list[tuple[Any, ...]]]:
    """Every row of the awards and of the history, as stored."""
    tables = (awards, history)
    rows = [await badges.database.fetch_all(table.select()) for table in tables]
    return [[tuple(row[n] for n in range(len(row))) for row in table_rows] for table_rows in rows]


BAD_CHANGES = [
    ("/users/ana/grants", {"badge": "nope"}, 404, "No badge with slug 'nope' is registered; "),
    (
        "/users/ana/revocations",
        {"badge": "nope", "by": "mod:9"},
        404,
        "No badge with slug 'nope' is registered; ",
    ),
    (
        "/users/ana/grants",
        {"badge": "points", "level": 9},
        400,
        "Badge 'points' has 3 level(s); level 9 is out of range.",
    ),
    (
        "/users/ana/revocations",
        {"badge": "points", "level": 9},
        400,
        "Badge 'points' has 3 level(s); level 9 is out of range.",
    ),
    (
        "/users/ana/grants",
        {"badge": "points"},
        400,
        "grant() of badge 'points' needs a level: it has 3 levels.",
    ),
    (
        "/users/ana/grants",
        {"badge": "points", "level": 2, "by": ""},
        400,
        "by must be None or a str of 1 to 255 characters; got ''.",
    ),
    # Ana holds the windfall: a revoke that checked its `by` or `reason` late would take it.
    (
        "/users/ana/revocations",
        {"badge": "windfall", "by": ""},
        400,
        "by must be None or a str of 1 to 255 characters; got ''.",
    ),
    (
        "/users/ana/revocations",
        {"badge": "windfall", "reason": "x" * 1001},
        400,
        f"reason must be None or a str of 1 to 1000 characters; got '{'x' * 76}....",
    ),
    (
        "/users/ana/grants",
        {"badge": "windfall", "by": 7},
        400,
        "by must be None or a str of 1 to 255 characters; got 7.",
    ),
    # Misspelt, "level" would be left out: the revoke would take every level.
    (
        "/users/ana/revocations",
        {"badge": "windfall", "levle": 1},
        400,
        "Unknown field 'levle'; the fields are 'badge', 'level', 'by' and 'reason'.",
    ),
    (
        "/users/ana/grants",
        {"badge": "points", "level": "2"},
        400,
        "'level' must be a whole number; got \"2\".",
    ),
    (
        "/users/ana/grants",
        {"badge": "points", "level": True},
        400,
        "'level' must be a whole number; got true.",
    ),
    ("/users/ana/grants", {"badge": 5}, 400, "'badge' must be a string; got 5."),
    ("/users/ana/revocations", {}, 400, "'badge' must be a string; got null."),
    ("/users/ana/grants", [], 400, "The request body must be a JSON object; got list."),
    (
        "/users/a%20b/grants",
        {"badge": "windfall"},
        400,
        "User ids are 1 to 64 letters, digits, '_', '.' or '-'; got 'a b'.",
    ),
]

BAD_PAGES = [
    ("limit=-1", "limit must be a whole number from 1 to 100; got '-1'."),
    ("limit=0", "limit must be a whole number from 1 to 100; got '0'."),
    ("limit=101", "limit must be a whole number from 1 to 100; got '101'."),
    ("limit=", "limit must be a whole number from 1 to 100; got ''."),
    ("limit=2.5", "limit must be a whole number from 1 to 100; got '2.5'."),
    ("limit=%D9%A1", "limit must be a whole number from 1 to 100; got '\u0661'."),  # Arabic 1.
    ("limit=" + "9" * 5000, f"limit must be a whole number from 1 to 100; got '{'9' * 80}'."),
    ("offset=-1", "offset must be a whole number from 0 to 1,000,000; got '-1'."),
    ("offset=1000001", "offset must be a whole number from 0 to 1,000,000; got '1000001'."),
    ("limit=5&limit=6", "limit must be given once; got it 2 times."),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_bad_grants_revocations_and_history_pages_are_refused_and_change_nothing(
    framework: str, site_env: dict[str, str]
) -> None:
    async with serve(framework) as client:
        await call(client, "POST", "/users/ana/points", {"points": 6000})  # Bronze, Windfall
        before = await call(client, "GET", "/users/ana/history")
        assert len(before["changes"]) == 2
        rows = await stored_rows()
        for path, body, status, message in BAD_CHANGES:
            response = await client.post(path, json=body)
            assert response.status_code == status, (path, body, response.text)
            assert response.json()["error"].startswith(message), (path, body)
        for query, message in BAD_PAGES:
            response = await client.get(f"/users/ana/history?{query}")
            assert (response.status_code, response.json()) == (400, {"error": message}), query
        response = await client.get("/users/a%20b/history")
        assert response.status_code == 400
        assert response.json()["error"].startswith("User ids are 1 to 64 letters")

        assert await call(client, "GET", "/users/ana/history") == before
        assert await stored_rows() == rows


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_worker_expires_the_weekly_badge_and_a_later_visit_earns_it_again(
    framework: str, site_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    async with serve(framework) as client:
        [weekly] = (await call(client, "POST", "/users/bob/visits", {"day": "2024-05-01"}))[
            "awarded"
        ]
        assert weekly["slug"] == "weekly"
        # Held: another visit earns nothing.
        body = await call(client, "POST", "/users/bob/visits", {"day": "2024-05-02"})
        assert body["awarded"] == []
        # Cy's visit was eight days ago (the app serves no way to date an award in the past):
        # her weekly badge expired yesterday, and counts in no query from then on.
        old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=8)
        user = await store.load_user("cy")
        await badges.possibly_award_badge("visited", user=user, day=old.date(), force_timestamp=old)
        assert await slugs_held(client, "cy") == []
        assert [c[0] for c in changes_of(await call(client, "GET", "/users/cy/history"))] == [
            "granted"
        ]

        log = tmp_path / "worker.log"
        async with worker(site_env, log):
            # The worker moves expired awards to the history when it starts, then every minute.
            with anyio.fail_after(30):
                while len((await call(client, "GET", "/users/cy/history"))["changes"]) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        assert "Traceback" not in log.read_text()
        page = await call(client, "GET", "/users/cy/history")
        assert changes_of(page) == [
            ("expired", "weekly", 1, "This week", "event", None, None),
            ("granted", "weekly", 1, "This week", "event", None, None),
        ]
        expired_at = datetime.datetime.fromisoformat(page["changes"][0]["at"])
        assert expired_at == old + datetime.timedelta(days=7)
        # Bob's, a day old, is still held.
        assert await slugs_held(client, "bob") == ["weekly"]
        assert len((await call(client, "GET", "/users/bob/history"))["changes"]) == 1

        # Cy visits again: she earns the badge again, for another week.
        [again] = (await call(client, "POST", "/users/cy/visits", {"day": "2024-05-10"}))["awarded"]
        assert again["slug"] == "weekly"
        assert expires_a_week_after(again)
        assert await slugs_held(client, "cy") == ["weekly"]
        actions = [c[0] for c in changes_of(await call(client, "GET", "/users/cy/history"))]
        assert actions == ["granted", "expired", "granted"]


async def test_the_user_page_shows_the_badges_held_then_the_history_escaped(
    site_env: dict[str, str],
) -> None:
    async with serve("starlette") as client:
        await call(client, "POST", "/users/ana/points", {"points": 6000})  # Bronze, Windfall
        await call(client, "POST", "/users/ana/points", {"points": 1000})  # Windfall again
        grant = {"badge": "points", "level": 3, "by": "mod:7", "reason": "Ran the help desk"}
        await call(client, "POST", "/users/ana/grants", grant, status=201)
        revoke = {
            "badge": "points",
            "level": 1,
            "by": "mod:9",
            "reason": "Points from a <b>bug</b> & a refund",
        }
        assert await call(client, "POST", "/users/ana/revocations", revoke) == {"revoked": 1}
        day = (await call(client, "GET", "/users/ana/history"))["changes"][0]["at"][:10]

        page = await client.get("/users/ana")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<h1>ana</h1>" in page.text
        held, changes = page.text.split("<h2>History</h2>")
        assert held.endswith(
            "<h2>Badges</h2><ul><li>Gold (points, level 3)</li>"
            "<li>Windfall (windfall, level 1) x 2</li></ul>"
        )
        listed = changes.removeprefix("<ul>").split("</ul>")[0]
        items = [item.removesuffix("</li>") for item in listed.split("<li>")[1:]]
        assert items[:2] == [
            f"{day}: revoked Bronze (Points from a &lt;b&gt;bug&lt;/b&gt; &amp; a refund)",
            f"{day}: granted Gold (Ran the help desk)",
        ]
        assert sorted(items[2:]) == [
            f"{day}: granted Bronze",
            f"{day}: granted Windfall",
            f"{day}: granted Windfall",
        ]
        assert "<b>" not in page.text
        assert "mod:" not in page.text  # Moderators' ids stay off the page.

        # The board links each holder to their page.
        board = await client.get("/")
        assert '<a href="/users/ana">ana</a>' in board.text

        nobody = await client.get("/users/nobody")
        assert nobody.status_code == 200
        assert "<h2>Badges</h2><p>No badges yet.</p><h2>History</h2><p>Nothing yet.</p>" in (
            nobody.text
        )
        refused = await client.get("/users/a%20b")
        assert refused.status_code == 400
        assert refused.json()["error"].startswith("User ids are 1 to 64 letters")
