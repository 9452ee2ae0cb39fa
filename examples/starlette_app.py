"""The example site on Starlette (FastAPI takes the same `lifespan=`).

```sh
python -m examples.store                  # once: create the tables
uvicorn examples.starlette_app:app        # the app, on http://127.0.0.1:8000
```
"""

from __future__ import annotations

import collections
import html
import urllib.parse

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


async def badge_list(request: Request) -> Response:
    return JSONResponse(await api.badge_list())


async def badge_holders(request: Request) -> Response:
    params = request.path_params
    return JSONResponse(await api.badge_holders(params["slug"], params["level"]))


async def board(request: Request) -> Response:
    """A plain HTML badge board: every level, how often it was awarded, its latest holders,
    each linked to their page."""
    rows = []
    for badge in await api.badge_list():
        for level in badge["levels"]:
            holders = await badges.holders(badge["slug"], level["level"], limit=5)
            text = (badge["slug"], level["name"], level["description"] or "", level["awarded"])
            cells = [html.escape(str(value)) for value in text]
            cells.append(
                ", ".join(_user_link(u) for u in dict.fromkeys(a.user_id for a in holders))
            )
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return HTMLResponse(
        "<!doctype html><title>Badges</title><h1>Badges</h1><table>"
        "<tr><th>badge</th><th>level</th><th>for</th><th>awarded</th><th>latest holders</th></tr>"
        f"{''.join(rows)}</table>"
    )


async def user_page(request: Request) -> Response:
    """A user's page: the badges held, a badge held several times once with "x N", then the
    latest changes of what the user holds. `by` is left out: moderators' ids stay private."""
    user_id = request.path_params["id"]
    held = (await api.user_badges(user_id))["awards"]
    changes = (await api.user_history(user_id, [], []))["changes"]
    times = collections.Counter((award["slug"], award["level"]) for award in held)
    names = {(award["slug"], award["level"]): award["name"] for award in held}
    badge_items = []
    for (slug, level), count in times.items():
        line = f"{names[slug, level] or slug} ({slug}, level {level})"
        badge_items.append(line + (f" x {count}" if count > 1 else ""))
    history_items = []
    for change in changes:
        line = f"{change['at'][:10]}: {change['action']} {change['name'] or change['slug']}"
        history_items.append(line + (f" ({change['reason']})" if change["reason"] else ""))
    return HTMLResponse(
        f"<!doctype html><title>{html.escape(user_id)}'s badges</title>"
        f"<h1>{html.escape(user_id)}</h1>"
        f"<h2>Badges</h2>{_html_list(badge_items, 'No badges yet.')}"
        f"<h2>History</h2>{_html_list(history_items, 'Nothing yet.')}"
        '<p><a href="/">All badges</a></p>'
    )


def _user_link(user_id: str) -> str:
    return f'<a href="/users/{urllib.parse.quote(user_id, safe="")}">{html.escape(user_id)}</a>'


def _html_list(items: list[str], empty: str) -> str:
    if not items:
        return f"<p>{html.escape(empty)}</p>"
    return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>"


async def refuse(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, api.HTTPError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


app = Starlette(
    routes=[
        Route("/", board),
        Route("/users/{id}/points", add_points, methods=["POST"]),
        Route("/users/{id}/visits", add_visit, methods=["POST"]),
        Route("/users/{id}", user_page),
        Route("/users/{id}/badges", user_badges),
        Route("/users/{id}/history", user_history),
        Route("/users/{id}/grants", grant, methods=["POST"]),
        Route("/users/{id}/revocations", revoke, methods=["POST"]),
        Route("/badges", badge_list),
        Route("/badges/{slug}/{level}", badge_holders),
    ],
    exception_handlers={api.HTTPError: refuse},
    lifespan=lifespan(),
)
