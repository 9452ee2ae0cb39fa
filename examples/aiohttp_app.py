"""The example site on aiohttp.

```sh
python -m examples.store                  # once: create the tables
python -m aiohttp.web -H 127.0.0.1 -P 8000 examples.aiohttp_app:create_app
```
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from abadges.integrations.aiohttp import setup

from . import api, credentials

HERE = pathlib.Path(__file__).parent
routes = web.RouteTableDef()


@routes.post("/users/{id}/points")
async def add_points(request: web.Request) -> web.Response:
    return web.json_response(await api.add_points(request.match_info["id"], await request.read()))


@routes.post("/users/{id}/visits")
async def add_visit(request: web.Request) -> web.Response:
    return web.json_response(await api.add_visit(request.match_info["id"], await request.read()))


@routes.get("/users/{id}/badges")
async def user_badges(request: web.Request) -> web.Response:
    return web.json_response(await api.user_badges(request.match_info["id"]))


@routes.get("/users/{id}/history")
async def user_history(request: web.Request) -> web.Response:
    query = request.query
    history = await api.user_history(
        request.match_info["id"], query.getall("limit", []), query.getall("offset", [])
    )
    return web.json_response(history)


@routes.get("/users/{id}/progress")
async def user_progress(request: web.Request) -> web.Response:
    return web.json_response(await api.user_progress(request.match_info["id"]))


@routes.post("/users/{id}/grants")
async def grant(request: web.Request) -> web.Response:
    granted = await api.grant(request.match_info["id"], await request.read())
    return web.json_response(granted, status=api.granted_status(granted))


@routes.post("/users/{id}/revocations")
async def revoke(request: web.Request) -> web.Response:
    return web.json_response(await api.revoke(request.match_info["id"], await request.read()))


@routes.get("/users/{id}/unseen")
async def user_unseen(request: web.Request) -> web.Response:
    return web.json_response(await api.user_unseen(request.match_info["id"]))


@routes.post("/users/{id}/seen")
async def mark_seen(request: web.Request) -> web.Response:
    return web.json_response(await api.mark_seen(request.match_info["id"], await request.read()))


@routes.get("/users/{id}/notices")
async def notices(request: web.Request) -> web.StreamResponse:
    """The user's notices as server-sent events (see `api.open_notices`), until the client goes
    away: aiohttp cancels this handler then when its server runs with `handler_cancellation`
    (as its test server does); otherwise the next heartbeat or notice finds the connection
    closed, within `api.HEARTBEAT` seconds."""
    events = api.open_notices(
        request.match_info["id"],
        request.headers.get("Last-Event-ID"),
        request.query.getall("last_id", []),
    )
    async with sse_response(request, sep="\n", ping_interval=api.HEARTBEAT) as response:
        relaying = asyncio.create_task(relay(events, response))
        try:
            await response.wait()  # Until a heartbeat fails, or the relay ends.
        finally:
            relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await relaying
    return response


async def relay(
    events: AsyncGenerator[dict[str, str], None], response: EventSourceResponse
) -> None:
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                await response.send(event["data"], id=event["id"], event=event["event"])
    finally:
        response.stop_streaming()


@routes.get("/badges")
async def badge_list(request: web.Request) -> web.Response:
    return web.json_response(await api.badge_list())


@routes.get("/badges/stats")
async def badge_stats(request: web.Request) -> web.Response:
    return web.json_response(await api.badge_stats())


@routes.get("/leaderboard")
async def leaderboard(request: web.Request) -> web.Response:
    query = request.query
    board = await api.leaderboard(
        query.getall("limit", []),
        query.getall("offset", []),
        query.getall("by", []),
        query.getall("badge", []),
    )
    return web.json_response(board)


@routes.get("/badges/{slug}/{level}")
async def badge_holders(request: web.Request) -> web.Response:
    info = request.match_info
    return web.json_response(await api.badge_holders(info["slug"], info["level"]))


@routes.get("/openbadges/issuer")
async def issuer_profile(request: web.Request) -> web.Response:
    return send(api.issuer_profile())


@routes.get("/openbadges/achievements/{slug}/{level}")
async def achievement(request: web.Request) -> web.Response:
    info = request.match_info
    return send(api.achievement(info["slug"], info["level"]))


# Before the credential's route, which would take "12.png" for an award id.
@routes.get("/openbadges/credentials/{award_id}.png")
async def baked_credential(request: web.Request) -> web.Response:
    return send(await api.baked_credential(request.match_info["award_id"]))


@routes.get("/openbadges/credentials/{award_id}")
async def credential(request: web.Request) -> web.Response:
    document = await api.credential(
        request.match_info["award_id"],
        request.query.getall("format", []),
        request.headers.get("Accept"),
    )
    return send(document)


@routes.get("/openbadges/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    return send(api.jwks())


@routes.get("/openbadges/status")
async def status_list(request: web.Request) -> web.Response:
    return send(await api.status_list())


def send(document: api.Document) -> web.Response:
    return web.Response(
        body=document.body, content_type=document.media_type, headers=document.headers
    )


async def open_badges(app: web.Application) -> AsyncIterator[None]:
    """The site's Open Badges settings from before abadges connects until after it
    disconnects (the cleanup contexts end in reverse order)."""
    with credentials.configured():
        yield


@web.middleware
async def refuse(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except api.HTTPError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)


def create_app(argv: list[str] | None = None) -> web.Application:
    """The app; `python -m aiohttp.web` passes its leftover command-line arguments as `argv`."""
    app = web.Application(middlewares=[refuse])
    app.add_routes(routes)
    # The badges' pictures, at /static/ as on Starlette's app: the credentials link to them.
    app.router.add_static("/static", HERE / "static")
    app.cleanup_ctx.append(open_badges)
    setup(app)
    return app
