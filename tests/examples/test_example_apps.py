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
from abadges.tables import awards
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
        for table in (awards, store.users, store.visits):
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


async def call(client: httpx.AsyncClient, method: str, path: str, body: Any = None) -> Any:
    response = await client.request(method, path, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


async def wait_for_addict(client: httpx.AsyncClient, user: str) -> None:
    with anyio.fail_after(30):
        while not (await call(client, "GET", f"/users/{user}/badges"))["awards"]:  # noqa: ASYNC110
            await anyio.sleep(0.05)


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
            # of May 2024 but the 31st. It only can on the day frozen in the request.
            days = [FIRST_DAY + datetime.timedelta(days=n) for n in range(30)]
            for user, visited in (("cy", days[:14] + days[15:]), ("bob", days)):
                for day in visited:
                    body = await call(
                        client, "POST", f"/users/{user}/visits", {"day": day.isoformat()}
                    )
                    assert body == {"user": user, "day": day.isoformat(), "awarded": []}
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
        bob = await call(client, "GET", "/users/bob/badges")
        assert [(a["slug"], a["name"]) for a in bob["awards"]] == [("addict", "Addict")]
        assert await call(client, "GET", "/users/cy/badges") == {
            "user": "cy",
            "count": 0,
            "awards": [],
        }

        assert await call(client, "GET", "/badges") == [
            {
                "slug": "points",
                "multiple": False,
                "deferred": False,
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
                "levels": [
                    {
                        "level": 1,
                        "name": "Addict",
                        "description": "Visited every day for 30 days",
                        "awarded": 1,
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

        if framework == "starlette":
            board = await client.get("/")
            assert board.headers["content-type"].startswith("text/html")
            assert board.text.count("<tr>") == 6  # The header and one row per level.
            assert "<td>Addict</td><td>Visited every day for 30 days</td><td>1</td>" in board.text
            assert "<td>4</td><td>ana, ana, ana, ana</td>" in board.text


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
        "registered slugs: ['addict', 'points', 'windfall'].",
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


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_app_refuses_bad_input_and_writes_nothing(
    framework: str, site_env: dict[str, str], redis_url: str
) -> None:
    async with serve(framework) as client:
        for method, path, content, status, message in REFUSED:
            response = await client.request(method, path, content=content)
            assert (response.status_code, response.json()) == (status, {"error": message}), path
        for table in (awards, store.users, store.visits):
            assert await badges.database.fetch_all(table.select()) == []
    assert await queued(redis_url, site_env["ABADGES_QUEUE_NAME"]) == 0
