"""The example site on aiohttp.

```sh
python -m examples.store                  # once: create the tables
python -m aiohttp.web -H 127.0.0.1 -P 8000 examples.aiohttp_app:create_app
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from abadges.integrations.aiohttp import setup

from . import api

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
    setup(app)
    return app
