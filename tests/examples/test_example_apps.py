"""The example apps over real HTTP, each on every database, with a real worker process.

Starlette and Quart run under uvicorn in this process, aiohttp under its own test server; the
worker is `arq abadges.worker.Settings` with `ABADGES_BADGES=examples.badges`.
"""

from __future__ import annotations

import collections
import datetime
import html.parser
import pathlib
import re
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio

from abadges import badges
from abadges.tables import awards, history
from abadges.testing import free_port
from examples import store
from tests.support import award_jobs, worker
from tests.support.example_site import FRAMEWORKS, call, serve

FIRST_DAY = datetime.date(2024, 5, 1)


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
                "group": "Points",
                "hidden": False,
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
                        "image": "/static/badges/points.svg",
                        "points": 10,
                        "awarded": 1,
                    },
                    {
                        "level": 2,
                        "name": "Silver",
                        "description": "Over 7,500 points",
                        "image": "/static/badges/points.svg",
                        "points": 25,
                        "awarded": 1,
                    },
                    {
                        "level": 3,
                        "name": "Gold",
                        "description": "Over 10,000 points",
                        "image": "/static/badges/points.svg",
                        "points": 50,
                        "awarded": 1,
                    },
                ],
            },
            {
                "slug": "windfall",
                "group": "Points",
                "hidden": True,
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
                        "image": "/static/badges/windfall.svg",
                        "points": 5,
                        "awarded": 4,
                    }
                ],
            },
            {
                "slug": "addict",
                "group": "Visits",
                "hidden": False,
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
                        "image": "/static/badges/addict.svg",
                        "points": 30,
                        "awarded": 1,
                    }
                ],
            },
            {
                "slug": "weekly",
                "group": "Visits",
                "hidden": False,
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
                        "image": "/static/badges/weekly.svg",
                        "points": 2,
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
            catalogue = await client.get("/")
            assert catalogue.headers["content-type"].startswith("text/html")
            # The hidden windfall is left out; ana, bob and cy are the site's 3 members.
            assert texts(catalogue.text, "group", "h2") == ["Points", "Visits"]
            assert texts(catalogue.text, "level", "name") == [
                "Bronze",
                "Silver",
                "Gold",
                "Addict",
                "This week",
            ]
            assert texts(catalogue.text, "level", "rarity") == [
                "33% of members",
                "33% of members",
                "33% of members",
                "33% of members",
                "67% of members",
            ]
            assert "Windfall" not in catalogue.text
            # Each holder once, linked to their page.
            assert texts(catalogue.text, "level", "holders") == [
                "1 holder: ana",
                "1 holder: ana",
                "1 holder: ana",
                "1 holder: bob",
                "2 holders: bob, cy",
            ]
            assert '<a href="/users/cy">cy</a>' in catalogue.text


class Texts(html.parser.HTMLParser):
    """The text of every element of a page, whitespace collapsed, with its tag and classes."""

    VOID = frozenset({"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, list[str], list[str], list[Any]]] = []
        #: (tag, classes, text, the elements inside) of each top-level element, in order.
        self.elements: list[Any] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.open.append((tag, (dict(attrs).get("class") or "").split(), [], []))

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            name, classes, parts, inside = self.open.pop()
            element = (name, classes, " ".join("".join(parts).split()), inside)
            if self.open:
                self.open[-1][2].extend(parts)
                self.open[-1][3].append(element)
            else:
                self.elements.append(element)
            if name == tag:
                return

    def handle_data(self, data: str) -> None:
        if self.open:
            self.open[-1][2].append(data)


def texts(page: str, outer: str, inner: str | None = None) -> list[str]:
    """The text of each element of class `outer` (a tag name also matches), in page order; or
    of the first element of class `inner` inside each, left out where it has none."""

    def matches(element: Any, name: str) -> bool:
        return name in element[1] or element[0] == name

    def walk(elements: list[Any]) -> Any:
        for element in elements:
            yield element
            yield from walk(element[3])

    parser = Texts()
    parser.feed(page)
    found = []
    for element in walk(parser.elements):
        if matches(element, outer):
            if inner is None:
                found.append(element[2])
                continue
            found.extend([e[2] for e in walk(element[3]) if matches(e, inner)][:1])
    return found


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


async def test_the_user_page_shows_the_badges_held_progress_then_the_history_escaped(
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
        for day in ("2024-05-01", "2024-05-02", "2024-05-03"):
            await call(client, "POST", "/users/ana/visits", {"day": day})  # This week
        history = (await call(client, "GET", "/users/ana/history"))["changes"]
        day = datetime.datetime.fromisoformat(history[0]["at"]).strftime("%-d %b %Y")

        page = await client.get("/users/ana")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert texts(page.text, "h1") == ["ana"]
        assert texts(page.text, "summary") == [
            "7,000 points · #1 on the leaderboard · 62 badge points"
        ]
        # Newest first; a badge held twice once, with its count.
        assert texts(page.text, "held-badge") == [
            f"This week Earned {day} Held until {next_week(history[0]['at'])} {DOWNLOADS}",
            f"Gold Earned {day} {DOWNLOADS}",
            f"Windfall \u00d72 Latest {day} {DOWNLOADS}",
        ]
        # Gold is the last level of points: only the visits' streak is left to go.
        assert texts(page.text, "goal") == ["Addict 3 / 30 days in a row"]
        [bar] = re.findall(r'<div class="track" (.*?)>\s*<div class="bar" (.*?)>', page.text)
        assert bar == (
            'role="progressbar" aria-label="Addict: 3 / 30 days in a row" aria-valuemin="0" '
            'aria-valuemax="100" aria-valuenow="10"',
            'style="width: 10%"',
        )
        changes = texts(page.text, "change")
        assert changes[:3] == [
            f"{day} Earned This week",
            f"{day} Taken away Bronze Points from a <b>bug</b> & a refund",
            f"{day} Earned Gold Ran the help desk",
        ]
        assert sorted(changes[3:]) == [
            f"{day} Earned Bronze",
            f"{day} Earned Windfall",
            f"{day} Earned Windfall",
        ]
        # Escaped: shown as the text it is, never as markup.
        assert "Points from a &lt;b&gt;bug&lt;/b&gt; &amp; a refund" in page.text
        assert "<b>" not in page.text
        assert "mod:" not in page.text  # Moderators' ids stay off the page.

        nobody = await client.get("/users/nobody")
        assert nobody.status_code == 200
        assert texts(nobody.text, "summary") == ["0 points"]
        assert texts(nobody.text, "empty") == ["No badges yet.", "Nothing yet."]
        # Nobody has begun either: both badges with progress are ahead, from nothing.
        assert texts(nobody.text, "goal") == [
            "Bronze 0 / 5,000 points",
            "Addict 0 / 30 days in a row",
        ]
        assert nobody.text.count('style="width: 0%"') == 2
        refused = await client.get("/users/a%20b")
        assert refused.status_code == 400
        assert refused.json()["error"].startswith("User ids are 1 to 64 letters")


#: The links of each badge held on the user page, to its credential.
DOWNLOADS = "Download credential \u00b7 Baked PNG"


def next_week(at: str) -> str:
    moment = datetime.datetime.fromisoformat(at) + datetime.timedelta(days=7)
    return moment.strftime("%-d %b %Y")


def standings_of(board: dict[str, Any]) -> list[tuple[int, str, int, int]]:
    """(rank, user, points, awards) of each standing of a leaderboard page."""
    return [(s["rank"], s["user"], s["points"], s["awards"]) for s in board["standings"]]


BAD_LEADERBOARDS = [
    ("limit=0", "limit must be a whole number from 1 to 100; got '0'."),
    ("limit=101", "limit must be a whole number from 1 to 100; got '101'."),
    ("limit=ten", "limit must be a whole number from 1 to 100; got 'ten'."),
    ("offset=-1", "offset must be a whole number from 0 to 1,000,000; got '-1'."),
    ("by=votes", "by must be one of 'points', 'awards'; got 'votes'."),
    ("by=", "by must be one of 'points', 'awards'; got ''."),
    ("by=points&by=awards", "by must be given once; got it 2 times."),
    ("badge=nope", "badge must be one of 'addict', 'points', 'weekly'; got 'nope'."),
    # Hidden: its holders are not listed to everyone.
    ("badge=windfall", "badge must be one of 'addict', 'points', 'weekly'; got 'windfall'."),
    ("badge=points&badge=weekly", "badge must be given once; got it 2 times."),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_progress_stats_and_the_leaderboard_over_json(
    framework: str, site_env: dict[str, str]
) -> None:
    async with serve(framework) as client:
        await call(client, "POST", "/users/ana/points", {"points": 6000})  # Bronze, Windfall
        await call(client, "POST", "/users/ana/points", {"points": 1000})  # Windfall again
        for user in ("dan", "eve"):
            await call(client, "POST", f"/users/{user}/points", {"points": 6000})
        await call(client, "POST", "/users/cy/points", {"points": 4000})  # Windfall
        for day in ("2024-05-01", "2024-05-02", "2024-05-04"):
            await call(client, "POST", "/users/bob/visits", {"day": day})  # This week

        # Progress: toward the next level of points, and the visits' streak (bob's is 1 day:
        # he missed the 3rd). The windfall has none to show.
        assert await call(client, "GET", "/users/cy/progress") == {
            "user": "cy",
            "progress": [
                {
                    "slug": "points",
                    "level": 0,
                    "next_level": 1,
                    "name": "Bronze",
                    "unit": "points",
                    "current": 4000,
                    "target": 5000,
                    "fraction": 0.8,
                },
                {
                    "slug": "addict",
                    "level": 0,
                    "next_level": 1,
                    "name": "Addict",
                    "unit": "days in a row",
                    "current": 0,
                    "target": 30,
                    "fraction": 0.0,
                },
            ],
        }
        ana = (await call(client, "GET", "/users/ana/progress"))["progress"]
        assert [(p["slug"], p["level"], p["next_level"], p["name"]) for p in ana] == [
            ("points", 1, 2, "Silver"),
            ("addict", 0, 1, "Addict"),
        ]
        assert (ana[0]["current"], ana[0]["target"]) == (7000, 7500)
        bob = (await call(client, "GET", "/users/bob/progress"))["progress"]
        assert [(p["slug"], p["current"], p["target"]) for p in bob] == [
            ("points", 0, 5000),
            ("addict", 1, 30),
        ]
        # A user with the last level has nothing ahead of it.
        await call(client, "POST", "/users/dan/points", {"points": 5000})  # Gold, Windfall
        dan = (await call(client, "GET", "/users/dan/progress"))["progress"]
        assert [(p["slug"], p["next_level"]) for p in dan] == [("addict", 1)]

        # Stats: the site has 5 members; the hidden windfall is left out.
        stats = await call(client, "GET", "/badges/stats")
        assert [(s["slug"], s["level"], s["name"], s["holders"], s["share"]) for s in stats] == [
            ("points", 1, "Bronze", 3, 0.6),
            ("points", 2, "Silver", 0, 0.0),
            ("points", 3, "Gold", 1, 0.2),
            ("addict", 1, "Addict", 0, 0.0),
            ("weekly", 1, "This week", 1, 0.2),
        ]
        bronze = stats[0]
        first = datetime.datetime.fromisoformat(bronze["first_awarded_at"])
        latest = datetime.datetime.fromisoformat(bronze["latest_awarded_at"])
        assert first.utcoffset() is not None
        assert first < latest
        assert (stats[3]["first_awarded_at"], stats[3]["latest_awarded_at"]) == (None, None)

        # The leaderboard: by the points of the badges held (Bronze 10, Silver 25, Gold 50,
        # Windfall 5, This week 2), ties share a rank and are ordered by user id.
        assert await call(client, "GET", "/leaderboard") == {
            "by": "points",
            "badge": None,
            "limit": 10,
            "offset": 0,
            "standings": [
                {"rank": 1, "user": "dan", "points": 70, "awards": 4},
                {"rank": 2, "user": "ana", "points": 20, "awards": 3},
                {"rank": 3, "user": "eve", "points": 15, "awards": 2},
                {"rank": 4, "user": "cy", "points": 5, "awards": 1},
                {"rank": 5, "user": "bob", "points": 2, "awards": 1},
            ],
        }
        await call(client, "POST", "/users/eve/points", {"points": 1000})  # Windfall: 20
        board = await call(client, "GET", "/leaderboard?by=points")
        assert [(s[0], s[1]) for s in standings_of(board)] == [
            (1, "dan"),
            (2, "ana"),
            (2, "eve"),
            (4, "cy"),
            (5, "bob"),
        ]
        by_awards = await call(client, "GET", "/leaderboard?by=awards")
        assert by_awards["by"] == "awards"
        assert standings_of(by_awards) == [
            (1, "dan", 70, 4),
            (2, "ana", 20, 3),
            (2, "eve", 20, 3),
            (4, "bob", 2, 1),
            (4, "cy", 5, 1),
        ]
        paged = await call(client, "GET", "/leaderboard?by=awards&limit=2&offset=2")
        assert (paged["limit"], paged["offset"]) == (2, 2)
        assert standings_of(paged) == standings_of(by_awards)[2:4]
        points = await call(client, "GET", "/leaderboard?badge=points")
        assert points["badge"] == "points"
        assert standings_of(points) == [
            (1, "dan", 60, 2),
            (2, "ana", 10, 1),
            (2, "eve", 10, 1),
        ]
        assert standings_of(await call(client, "GET", "/leaderboard?badge=addict")) == []

        rows = await stored_rows()
        for query, message in BAD_LEADERBOARDS:
            response = await client.get(f"/leaderboard?{query}")
            assert (response.status_code, response.json()) == (400, {"error": message}), query
        response = await client.get("/users/a%20b/progress")
        assert response.status_code == 400
        assert response.json()["error"].startswith("User ids are 1 to 64 letters")
        assert await stored_rows() == rows

        if framework == "starlette":
            # A browser asks for HTML: the same leaderboard, as a page.
            page = await client.get("/leaderboard?by=awards", headers={"accept": "text/html"})
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["vary"] == "Accept"
            assert texts(page.text, "standing") == [
                "1 dan 70 4",
                "2 ana 20 3",
                "2 eve 20 3",
                "4 bob 2 1",
                "4 cy 5 1",
            ]
            assert '<a href="/users/eve">eve</a>' in page.text
            assert texts(page.text, "pill") == [
                "Badge points",
                "Badges held",
                "All badges",
                "Points",
                "Addict",
                "This week",
            ]
            refused = await client.get("/leaderboard?by=x", headers={"accept": "text/html"})
            assert refused.status_code == 400
