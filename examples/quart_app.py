"""The example site on Quart.

```sh
python -m examples.store                  # once: create the tables
uvicorn examples.quart_app:app            # the app, on http://127.0.0.1:8000
```
"""

from __future__ import annotations

import contextlib
from typing import Any

from quart import Quart, Response, ResponseReturnValue, request

from abadges.integrations.quart import init_app

from . import api, credentials

# Quart serves examples/static/ at /static/, as Starlette's app does: the badges' pictures.
app = Quart(__name__)
# The site's Open Badges settings from before abadges connects until after it disconnects.
open_badges = contextlib.ExitStack()


@app.before_serving
async def configure_open_badges() -> None:
    open_badges.enter_context(credentials.configured())


init_app(app)


@app.after_serving
async def restore_settings() -> None:
    open_badges.close()


@app.post("/users/<id>/points")
async def add_points(id: str) -> dict[str, Any]:
    return await api.add_points(id, await request.body)


@app.post("/users/<id>/visits")
async def add_visit(id: str) -> dict[str, Any]:
    return await api.add_visit(id, await request.body)


@app.get("/users/<id>/badges")
async def user_badges(id: str) -> dict[str, Any]:
    return await api.user_badges(id)


@app.get("/users/<id>/history")
async def user_history(id: str) -> dict[str, Any]:
    args = request.args
    return await api.user_history(id, args.getlist("limit"), args.getlist("offset"))


@app.get("/users/<id>/progress")
async def user_progress(id: str) -> dict[str, Any]:
    return await api.user_progress(id)


@app.post("/users/<id>/grants")
async def grant(id: str) -> ResponseReturnValue:
    granted = await api.grant(id, await request.body)
    return granted, api.granted_status(granted)


@app.post("/users/<id>/revocations")
async def revoke(id: str) -> dict[str, Any]:
    return await api.revoke(id, await request.body)


@app.get("/users/<id>/unseen")
async def user_unseen(id: str) -> dict[str, Any]:
    return await api.user_unseen(id)


@app.post("/users/<id>/seen")
async def mark_seen(id: str) -> dict[str, Any]:
    return await api.mark_seen(id, await request.body)


@app.get("/users/<id>/notices")
async def notices(id: str) -> ResponseReturnValue:
    """The user's notices as server-sent events (see `api.open_notices`), written by Quart's
    own streaming. When the client goes away, Quart cancels the response, which closes the
    subscription."""
    events = api.open_notices(
        id, request.headers.get("Last-Event-ID"), request.args.getlist("last_id")
    )
    response = Response(
        api.with_heartbeat(events, api.HEARTBEAT),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # Open as long as the client stays.
    return response


@app.get("/badges")
async def badge_list() -> list[dict[str, Any]]:
    return await api.badge_list()


@app.get("/badges/stats")
async def badge_stats() -> list[dict[str, Any]]:
    return await api.badge_stats()


@app.get("/leaderboard")
async def leaderboard() -> dict[str, Any]:
    args = request.args
    return await api.leaderboard(
        args.getlist("limit"), args.getlist("offset"), args.getlist("by"), args.getlist("badge")
    )


@app.get("/badges/<slug>/<level>")
async def badge_holders(slug: str, level: str) -> dict[str, Any]:
    return await api.badge_holders(slug, level)


@app.get("/openbadges/issuer")
async def issuer_profile() -> Response:
    return send(api.issuer_profile())


@app.get("/openbadges/achievements/<slug>/<level>")
async def achievement(slug: str, level: str) -> Response:
    return send(api.achievement(slug, level))


@app.get("/openbadges/credentials/<award_id>.png")
async def baked_credential(award_id: str) -> Response:
    return send(await api.baked_credential(award_id))


@app.get("/openbadges/credentials/<award_id>")
async def credential(award_id: str) -> Response:
    document = await api.credential(
        award_id, request.args.getlist("format"), request.headers.get("Accept")
    )
    return send(document)


@app.get("/openbadges/jwks.json")
async def jwks() -> Response:
    return send(api.jwks())


@app.get("/openbadges/status")
async def status_list() -> Response:
    return send(await api.status_list())


def send(document: api.Document) -> Response:
    return Response(document.body, content_type=document.media_type, headers=document.headers)


@app.errorhandler(api.HTTPError)
async def refuse(exc: api.HTTPError) -> ResponseReturnValue:
    return {"error": exc.message}, exc.status
