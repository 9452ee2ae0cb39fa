"""The example apps' live notices over real HTTP, each on every database: the stream of
server-sent events (`GET /users/{id}/notices`), resuming it, and the unseen list
(`GET /users/{id}/unseen`, `POST /users/{id}/seen`).

The apps publish to a private Redis here, so that the tests can see each subscription's
connection in `CLIENT LIST`, and that it is gone once the client has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from abadges.testing import RedisServer
from examples import api
from tests.support.example_site import (
    FRAMEWORKS,
    EventStream,
    call,
    serve,
    subscriptions,
    wait_for_subscriptions,
)

BAD_LAST_ID = (
    "subscribe() last_id must be None or the id of a notice, such as '1718000000000-0'; got {}."
)


@pytest.fixture
async def notices_redis(
    site_env: dict[str, str], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The apps' Redis (queue and notices): a private one."""
    monkeypatch.setenv("ABADGES_REDIS_URL", redis_server.url)
    return redis_server.url


def tasks() -> set[asyncio.Task[Any]]:
    """The tasks of this process, but sse-starlette's watcher of the server's shutdown, which
    it starts with the first stream and runs while the loop does."""
    return {
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") != "_shutdown_watcher"
    }


async def wait_for_tasks(before: set[asyncio.Task[Any]]) -> None:
    """Wait until this process runs no task that it did not run `before`: a stream closed by
    its client has ended its server's tasks."""
    with anyio.move_on_after(10):
        while tasks() - before:  # noqa: ASYNC110 - tasks have no event.
            await anyio.sleep(0.02)
    assert not tasks() - before, tasks() - before


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[EventStream]:
    """A stream of `client`'s server, on a connection of its own that closes on exit, as a
    browser's tab that is closed."""
    async with (
        httpx.AsyncClient(base_url=client.base_url, timeout=30) as own,
        own.stream("GET", path, headers=headers) as response,
    ):
        yield EventStream(response)


async def newest_unseen(client: httpx.AsyncClient, user: str) -> dict[str, Any]:
    return dict((await call(client, "GET", f"/users/{user}/unseen"))["awards"][0])


def notice_of(fields: list[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    """The id of a notice's event and its data, checked to be the three fields in order, the
    data one line of JSON whose `id` is the event's."""
    names = [name for name, _ in fields]
    assert names == ["id", "event", "data"], fields
    (_, event_id), (_, event), (_, data) = fields
    assert event == "notice"
    decoded = json.loads(data)
    assert decoded["id"] == event_id
    return event_id, decoded


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_stream_gives_each_notice_of_the_user_and_resumes_after_the_last_event_id(
    framework: str, notices_redis: str
) -> None:
    async with serve(framework) as client:
        # Before the stream opens: not given to a stream that starts from now on.
        bronze = {"badge": "points", "level": 1, "reason": "Imported"}
        await call(client, "POST", "/users/ana/grants", bronze, status=201)
        await call(client, "GET", "/users/ana/unseen")
        before = tasks()

        async with open_stream(client, "/users/ana/notices") as stream:
            assert stream.response.status_code == 200
            assert stream.response.headers["content-type"].startswith("text/event-stream")
            await wait_for_subscriptions(notices_redis, 1)
            # Another user's grant is not in ana's stream.
            await call(client, "POST", "/users/bob/grants", {"badge": "addict"}, status=201)
            windfall = await call(
                client, "POST", "/users/ana/grants", {"badge": "windfall"}, status=201
            )
            first_id, first = notice_of(await stream.next_event())
            assert first == {
                "id": first_id,
                "change": "granted",
                "award": await newest_unseen(client, "ana"),
            }
            assert first["award"] == {
                **first["award"],
                **windfall["awarded"],
                "user": "ana",
            }
            assert first["award"]["slug"] == "windfall"
            revoked = {"badge": "points", "by": "mod:9", "reason": "Counted twice"}
            assert await call(client, "POST", "/users/ana/revocations", revoked) == {"revoked": 1}
            second_id, second = notice_of(await stream.next_event())
            assert (second["change"], second["award"]["slug"], second["award"]["level"]) == (
                "revoked",
                "points",
                1,
            )
            assert second["award"]["reason"] == "Imported"  # The award as it was when it ended.
            assert second_id > first_id

        # The client went away: the server's subscription ends, its Redis connection closes.
        await wait_for_subscriptions(notices_redis, 0)
        await wait_for_tasks(before)

        # Awarded while no stream is open, then a reconnection after the last event it got.
        for level in (2, 3):
            body = {"badge": "points", "level": level}
            await call(client, "POST", "/users/ana/grants", body, status=201)
        resumed = {"last-event-id": second_id}
        async with open_stream(client, "/users/ana/notices", headers=resumed) as stream:
            missed = [notice_of(await stream.next_event()) for _ in range(2)]
            assert [(n["change"], n["award"]["level"]) for _, n in missed] == [
                ("granted", 2),
                ("granted", 3),
            ]
            # Nothing given twice: the next event is the next award's.
            await wait_for_subscriptions(notices_redis, 1)
            await call(client, "POST", "/users/ana/grants", {"badge": "weekly"}, status=201)
            _, after = notice_of(await stream.next_event())
            assert after["award"]["slug"] == "weekly"

        # The first connection of a page that knows where it is: the `last_id` query parameter,
        # which Last-Event-ID overrides.
        async with open_stream(client, f"/users/ana/notices?last_id={first_id}") as stream:
            assert notice_of(await stream.next_event())[0] == second_id
        path = f"/users/ana/notices?last_id={first_id}"
        async with open_stream(client, path, headers=resumed) as stream:
            assert notice_of(await stream.next_event())[0] == missed[0][0]
        await wait_for_subscriptions(notices_redis, 0)
        await wait_for_tasks(before)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_bad_last_event_id_is_refused_before_the_stream_starts(
    framework: str, notices_redis: str
) -> None:
    async with serve(framework) as client:
        refused = [
            ({"last-event-id": "nope"}, "", BAD_LAST_ID.format("'nope'")),
            ({"last-event-id": "1-2-3"}, "", BAD_LAST_ID.format("'1-2-3'")),
            ({}, "?last_id=latest", BAD_LAST_ID.format("'latest'")),
            ({}, "?last_id=", BAD_LAST_ID.format("''")),
            ({}, "?last_id=1-0&last_id=2-0", "last_id must be given once; got it 2 times."),
        ]
        for headers, query, message in refused:
            response = await client.get(f"/users/ana/notices{query}", headers=headers)
            assert (response.status_code, response.json()) == (400, {"error": message}), headers
        response = await client.get("/users/a%20b/notices")
        assert response.status_code == 400
        assert response.json()["error"].startswith("User ids are 1 to 64 letters")
        assert await subscriptions(notices_redis) == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_an_idle_stream_sends_a_heartbeat(
    framework: str, notices_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api.HEARTBEAT == 15
    monkeypatch.setattr(api, "HEARTBEAT", 0.2)
    async with serve(framework) as client:
        async with open_stream(client, "/users/ana/notices") as stream:
            for _ in range(2):
                assert await stream.next_item() == ("comment", ": ping")


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_unseen_list_and_marking_it_seen(framework: str, notices_redis: str) -> None:
    async with serve(framework) as client:
        assert await call(client, "GET", "/users/ana/unseen") == {
            "user": "ana",
            "count": 0,
            "awards": [],
        }
        for badge in ("addict", "windfall", "weekly"):
            await call(client, "POST", "/users/ana/grants", {"badge": badge}, status=201)
        await call(client, "POST", "/users/bob/grants", {"badge": "addict"}, status=201)
        unseen = await call(client, "GET", "/users/ana/unseen")
        assert (unseen["user"], unseen["count"]) == ("ana", 3)
        assert [a["slug"] for a in unseen["awards"]] == ["weekly", "windfall", "addict"]
        held = (await call(client, "GET", "/users/ana/badges"))["awards"]
        assert [
            {k: v for k, v in a.items() if k not in ("id", "user")} for a in unseen["awards"]
        ] == (held)
        assert {a["user"] for a in unseen["awards"]} == {"ana"}
        weekly, windfall, addict = (a["id"] for a in unseen["awards"])
        [bobs] = (await call(client, "GET", "/users/bob/unseen"))["awards"]

        refused = [
            (
                b'{"ids": "12"}',
                "mark_seen() ids must be None or an iterable of award ids; got '12'.",
            ),
            (b'{"ids": 12}', "mark_seen() ids must be None or an iterable of award ids; got 12."),
            (b'{"ids": [1, "2"]}', "mark_seen() ids must be award ids (int); got '2' in [1, '2']."),
            (b'{"ids": [true]}', "mark_seen() ids must be award ids (int); got True in [True]."),
            (b'{"ids": [1.5]}', "mark_seen() ids must be award ids (int); got 1.5 in [1.5]."),
            (b'{"ids": {"1": 2}}', "mark_seen() ids must be None or an iterable of award ids; "),
            (b'{"id": [1]}', "Unknown field 'id'; the only field is 'ids'."),
            (b"[1]", "The request body must be a JSON object; got list."),
            (b"ids=1", "The request body must be a JSON object."),
        ]
        for body, message in refused:
            response = await client.post("/users/ana/seen", content=body)
            assert response.status_code == 400, body
            assert response.json()["error"].startswith(message), (body, response.json())
        response = await client.post("/users/a%20b/seen")
        assert response.status_code == 400
        assert response.json()["error"].startswith("User ids are 1 to 64 letters")
        assert (await call(client, "GET", "/users/ana/unseen"))["count"] == 3

        # Bob's award and unknown ids are passed over, not counted.
        marking = {"ids": [windfall, bobs["id"], 10**12]}
        assert await call(client, "POST", "/users/ana/seen", marking) == {"marked": 1}
        left = await call(client, "GET", "/users/ana/unseen")
        assert [a["id"] for a in left["awards"]] == [weekly, addict]
        assert await call(client, "POST", "/users/ana/seen", {"ids": [windfall]}) == {"marked": 0}
        # No body, or no ids: all of them.
        assert await call(client, "POST", "/users/ana/seen", {}) == {"marked": 2}
        assert (await call(client, "GET", "/users/ana/unseen"))["awards"] == []
        response = await client.post("/users/bob/seen")
        assert (response.status_code, response.json()) == (200, {"marked": 1})
        assert (await call(client, "GET", "/users/bob/unseen"))["count"] == 0
