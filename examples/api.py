"""What every example app serves, whatever the framework: JSON in, JSON-ready dicts out.

The apps route requests here and turn `HTTPError` into an error response.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from abadges import Award, BadgeNotRegisteredError, InvalidLevelError, QueueUnavailableError, badges

from . import badges as _registered  # noqa: F401  (registers the example's badges)
from . import store

USER_ID = re.compile(r"[\w.-]{1,64}", re.ASCII)
MAX_POINTS = 1_000_000
HOLDERS_SHOWN = 50


class HTTPError(Exception):
    """Raised for a request the app refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def add_points(user_id: str, body: bytes) -> dict[str, Any]:
    """`POST /users/{id}/points` with `{"points": n}`: add them, then award what they earn."""
    points = _field(_json(body), "points", int)
    if not 1 <= points <= MAX_POINTS:
        raise HTTPError(400, f"points must be from 1 to {MAX_POINTS:,}; got {str(points)[:80]}.")
    user = await store.add_points(_user_id(user_id), points)
    awarded = await badges.possibly_award_badge("points_awarded", user=user, added=points)
    return {"user": user.id, "points": user.points, "awarded": [_award(a) for a in awarded]}


async def add_visit(user_id: str, body: bytes) -> dict[str, Any]:
    """`POST /users/{id}/visits`, optionally with `{"day": "YYYY-MM-DD"}` (default: today):
    record the visit, then queue the deferred badges of the "visited" event."""
    user_id = _user_id(user_id)
    data = _json(body) if body.strip() else {}
    day = datetime.date.today()
    if "day" in data:
        text = _field(data, "day", str)
        try:
            day = datetime.date.fromisoformat(text)
        except ValueError:
            raise HTTPError(400, f"day must be a date like 2024-05-01; got {text!r}.") from None
    await store.add_visit(user_id, day)
    user = await store.load_user(user_id)
    try:
        awarded = await badges.possibly_award_badge("visited", user=user, day=day)
    except* QueueUnavailableError as group:
        # The visit stands; the badges it may earn wait for the user's next visit. A badge
        # that failed in the same call stays in the group that is raised with this error.
        [error] = group.exceptions
        raise HTTPError(
            503, f"The visit is recorded, but its badges could not be queued: {error}"
        ) from error
    return {"user": user.id, "day": day.isoformat(), "awarded": [_award(a) for a in awarded]}


async def user_badges(user_id: str) -> dict[str, Any]:
    """`GET /users/{id}/badges`: the user's awards, newest first."""
    awards = await badges.awards_for(_user_id(user_id))
    return {"user": user_id, "count": len(awards), "awards": [_award(a) for a in awards]}


async def badge_list() -> list[dict[str, Any]]:
    """`GET /badges`: every badge, each level with its name, description and award count."""
    counts = await badges.award_counts()
    listing = []
    for slug, badge in badges.registered.items():
        levels = []
        for level, awarded in counts[slug].items():
            detail = badge.detail(level)
            levels.append(
                {
                    "level": level,
                    "name": detail.name,
                    "description": detail.description,
                    "awarded": awarded,
                }
            )
        listing.append(
            {
                "slug": slug,
                "multiple": badge.multiple,
                "deferred": badge.deferred,
                "levels": levels,
            }
        )
    return listing


async def badge_holders(slug: str, level: str) -> dict[str, Any]:
    """`GET /badges/{slug}/{level}`: the level's latest holders, newest first."""
    try:
        badge = badges.get_badge(slug)
        number = badge.check_level(int(level) if level.isdecimal() else level)
    except (BadgeNotRegisteredError, InvalidLevelError) as exc:
        raise HTTPError(404, str(exc)) from None
    detail = badge.detail(number)
    holders = await badges.holders(slug, number, limit=HOLDERS_SHOWN)
    return {
        "slug": slug,
        "level": number,
        "name": detail.name,
        "description": detail.description,
        "holders": [{"user": a.user_id, "awarded_at": a.awarded_at.isoformat()} for a in holders],
    }


def _award(award: Award) -> dict[str, Any]:
    return {
        "slug": award.slug,
        "level": award.level,
        "name": award.name,
        "description": award.description,
        "awarded_at": award.awarded_at.isoformat(),
    }


def _user_id(user_id: str) -> str:
    if not USER_ID.fullmatch(user_id):
        raise HTTPError(
            400, f"User ids are 1 to 64 letters, digits, '_', '.' or '-'; got {user_id[:80]!r}."
        )
    return user_id


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise HTTPError(400, "The request body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise HTTPError(400, f"The request body must be a JSON object; got {type(data).__name__}.")
    return data


KINDS = {int: "a whole number", str: "a string"}


def _field(data: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HTTPError(400, f"{name!r} must be {KINDS[kind]}; got {json.dumps(value)[:80]}.")
    return value
