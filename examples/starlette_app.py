"""The example site on Starlette (FastAPI takes the same `lifespan=`).

```sh
python -m examples.store                  # once: create the tables
uvicorn examples.starlette_app:app        # the app, on http://127.0.0.1:8000
```
"""

from __future__ import annotations

import html

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from abadges import badges
from abadges.integrations.starlette import lifespan

from . import api


async def add_points(request: Request) -> Response:
    return JSONResponse(await api.add_points(request.path_params["id"], await request.body()))


async def add_visit(request: Request) -> Response:
    return JSONResponse(await api.add_visit(request.path_params["id"], await request.body()))


async def user_badges(request: Request) -> Response:
    return JSONResponse(await api.user_badges(request.path_params["id"]))


async def badge_list(request: Request) -> Response:
    return JSONResponse(await api.badge_list())


async def badge_holders(request: Request) -> Response:
    params = request.path_params
    return JSONResponse(await api.badge_holders(params["slug"], params["level"]))


async def board(request: Request) -> Response:
    """A plain HTML badge board: every level, how often it was awarded, its latest holders."""
    rows = []
    for badge in await api.badge_list():
        for level in badge["levels"]:
            holders = await badges.holders(badge["slug"], level["level"], limit=5)
            cells = (
                badge["slug"],
                level["name"],
                level["description"] or "",
                str(level["awarded"]),
                ", ".join(award.user_id for award in holders),
            )
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return HTMLResponse(
        "<!doctype html><title>Badges</title><h1>Badges</h1><table>"
        "<tr><th>badge</th><th>level</th><th>for</th><th>awarded</th><th>latest holders</th></tr>"
        f"{''.join(rows)}</table>"
    )


async def refuse(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, api.HTTPError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


app = Starlette(
    routes=[
        Route("/", board),
        Route("/users/{id}/points", add_points, methods=["POST"]),
        Route("/users/{id}/visits", add_visit, methods=["POST"]),
        Route("/users/{id}/badges", user_badges),
        Route("/badges", badge_list),
        Route("/badges/{slug}/{level}", badge_holders),
    ],
    exception_handlers={api.HTTPError: refuse},
    lifespan=lifespan(),
)
