"""The example site on Starlette (FastAPI takes the same `lifespan=`).

```sh
python -m examples.store                  # once: create the tables
uvicorn examples.starlette_app:app        # the app, on http://127.0.0.1:8000
```
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import jinja2
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from abadges.integrations.starlette import lifespan

from . import api, credentials, pages

HERE = pathlib.Path(__file__).parent
# Autoescaping on for every template: reasons and user ids are the users' own text.
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)


async def add_points(request: Request) -> Response:
    return JSONResponse(await api.add_points(request.path_params["id"], await request.body()))


async def add_visit(request: Request) -> Response:
    return JSONResponse(await api.add_visit(request.path_params["id"], await request.body()))


async def user_badges(request: Request) -> Response:
    return JSONResponse(await api.user_badges(request.path_params["id"]))


async def user_history(request: Request) -> Response:
    query = request.query_params
    return JSONResponse(
        await api.user_history(
            request.path_params["id"], query.getlist("limit"), query.getlist("offset")
        )
    )


async def grant(request: Request) -> Response:
    granted = await api.grant(request.path_params["id"], await request.body())
    return JSONResponse(granted, status_code=api.granted_status(granted))


async def revoke(request: Request) -> Response:
    return JSONResponse(await api.revoke(request.path_params["id"], await request.body()))


async def user_unseen(request: Request) -> Response:
    return JSONResponse(await api.user_unseen(request.path_params["id"]))


async def mark_seen(request: Request) -> Response:
    return JSONResponse(await api.mark_seen(request.path_params["id"], await request.body()))


async def notices(request: Request) -> Response:
    """The user's notices as server-sent events (see `api.open_notices`). When the client goes
    away, sse-starlette cancels the stream, which closes the subscription."""
    events = api.open_notices(
        request.path_params["id"],
        request.headers.get("last-event-id"),
        request.query_params.getlist("last_id"),
    )
    return EventSourceResponse(events, ping=api.HEARTBEAT, sep="\n", ping_message_factory=ping)


def ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep="\n")


async def badge_list(request: Request) -> Response:
    return JSONResponse(await api.badge_list())


async def badge_holders(request: Request) -> Response:
    params = request.path_params
    return JSONResponse(await api.badge_holders(params["slug"], params["level"]))


async def user_progress(request: Request) -> Response:
    return JSONResponse(await api.user_progress(request.path_params["id"]))


async def badge_stats(request: Request) -> Response:
    return JSONResponse(await api.badge_stats())


async def leaderboard(request: Request) -> Response:
    """The leaderboard: an HTML page for a browser (an `Accept` that names text/html), JSON
    for anyone else, from the same query parameters."""
    query = request.query_params
    if "text/html" in request.headers.get("accept", ""):
        context = await pages.leaderboard(query.getlist("by"), query.getlist("badge"))
        response = render(request, "leaderboard.html", context)
    else:
        response = JSONResponse(
            await api.leaderboard(
                query.getlist("limit"),
                query.getlist("offset"),
                query.getlist("by"),
                query.getlist("badge"),
            )
        )
    response.headers["vary"] = "Accept"
    return response


async def catalogue(request: Request) -> Response:
    """The badge catalogue: every listed badge under its group, with holders and rarity."""
    return render(request, "catalogue.html", await pages.catalogue())


async def user_page(request: Request) -> Response:
    """A user's page: the badges held, progress toward the next levels, then the latest
    changes. `by` is left out: moderators' ids stay private."""
    return render(request, "user.html", await pages.user(request.path_params["id"]))


async def issuer_profile(request: Request) -> Response:
    return send(api.issuer_profile())


async def achievement(request: Request) -> Response:
    params = request.path_params
    return send(api.achievement(params["slug"], params["level"]))


async def credential(request: Request) -> Response:
    document = await api.credential(
        request.path_params["award_id"],
        request.query_params.getlist("format"),
        request.headers.get("accept"),
    )
    return send(document)


async def baked_credential(request: Request) -> Response:
    return send(await api.baked_credential(request.path_params["award_id"]))


async def jwks(request: Request) -> Response:
    return send(api.jwks())


async def status_list(request: Request) -> Response:
    return send(await api.status_list())


def send(document: api.Document) -> Response:
    return Response(document.body, media_type=document.media_type, headers=document.headers)


def render(request: Request, name: str, context: dict[str, Any]) -> Response:
    return templates.TemplateResponse(request, name, context)


async def refuse(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, api.HTTPError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


abadges_lifespan = lifespan()


@contextlib.asynccontextmanager
async def app_lifespan(app: Starlette) -> AsyncIterator[None]:
    """The site's Open Badges settings, then abadges connected, for the life of the app."""
    with credentials.configured():
        async with abadges_lifespan(app):
            yield


app = Starlette(
    routes=[
        Route("/", catalogue),
        Route("/leaderboard", leaderboard),
        Route("/users/{id}/points", add_points, methods=["POST"]),
        Route("/users/{id}/visits", add_visit, methods=["POST"]),
        Route("/users/{id}", user_page),
        Route("/users/{id}/badges", user_badges),
        Route("/users/{id}/history", user_history),
        Route("/users/{id}/progress", user_progress),
        Route("/users/{id}/grants", grant, methods=["POST"]),
        Route("/users/{id}/revocations", revoke, methods=["POST"]),
        Route("/users/{id}/unseen", user_unseen),
        Route("/users/{id}/seen", mark_seen, methods=["POST"]),
        Route("/users/{id}/notices", notices),
        Route("/badges", badge_list),
        Route("/badges/stats", badge_stats),
        Route("/badges/{slug}/{level}", badge_holders),
        Route("/openbadges/issuer", issuer_profile),
        Route("/openbadges/achievements/{slug}/{level}", achievement),
        # Before the credential's route, which would take "12.png" for an award id.
        Route("/openbadges/credentials/{award_id}.png", baked_credential),
        Route("/openbadges/credentials/{award_id}", credential),
        Route("/openbadges/jwks.json", jwks),
        Route("/openbadges/status", status_list),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ],
    exception_handlers={api.HTTPError: refuse},
    lifespan=app_lifespan,
)
