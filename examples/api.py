"""What every example app serves, whatever the framework: JSON in, JSON-ready dicts out.

The apps route requests here and turn `HTTPError` into an error response. `grant()` and
`revoke()` stand for a moderator's tools: a real site serves them behind its own auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import re
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from typing import Any, Literal

from abadges import (
    Award,
    AwardChange,
    AwardNotice,
    Badge,
    BadgeNotRegisteredError,
    BadgeProgress,
    CredentialError,
    InvalidLevelError,
    QueueUnavailableError,
    badges,
)
from abadges.openbadges import bake_png

from . import badges as _registered  # noqa: F401  (registers the example's badges)
from . import pictures, store

USER_ID = re.compile(r"[\w.-]{1,64}", re.ASCII)
MAX_POINTS = 1_000_000
HOLDERS_SHOWN = 50
#: The history's page: `limit` by default, and at most.
HISTORY_PAGE = 20
MAX_HISTORY_PAGE = 100
MAX_OFFSET = 1_000_000
#: What the body of a grant or a revocation may hold; only "badge" is required.
CHANGE_FIELDS = ("badge", "level", "by", "reason")
#: The leaderboard's page: `limit` by default, and at most; what it may be ordered by.
LEADERBOARD_PAGE = 10
MAX_LEADERBOARD_PAGE = 100
LEADERBOARD_ORDERS = ("points", "awards")
#: Seconds between the comments (`: ping`) that keep an idle stream of notices open through
#: proxies that close quiet connections.
HEARTBEAT = 15.0
#: The comment itself, as `with_heartbeat` writes it (the SSE libraries write their own).
PING = b": ping\n\n"
#: The `event:` of each notice on the stream.
NOTICE_EVENT = "notice"
#: What the body of `POST /users/{id}/seen` may hold.
SEEN_FIELDS = ("ids",)
#: What the Open Badges endpoints answer with.
LD_JSON = "application/ld+json"
VC_JWT = "application/vc+jwt"
JWK_SET = "application/jwk-set+json"
#: An award's id in a credential's URL: 1 to 18 digits, none leading 0 (the awards' ids are
#: 64-bit integers).
AWARD_ID = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)
#: The values of a credential's `?format=`.
CREDENTIAL_FORMATS = ("json", "jwt")


class HTTPError(Exception):
    """Raised for a request the app refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class Document:
    """A response the apps send as it is: its body, its media type and more headers."""

    body: bytes
    media_type: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


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
        # The visit stands, and so do the inline awards recorded before the job was queued
        # (`weekly`); the deferred badges wait for the user's next visit. A badge that failed
        # in the same call stays in the group that is raised with this error.
        [error] = group.exceptions
        raise HTTPError(
            503, f"The visit is recorded, but its badges could not be queued: {error}"
        ) from error
    return {"user": user.id, "day": day.isoformat(), "awarded": [_award(a) for a in awarded]}


async def user_badges(user_id: str) -> dict[str, Any]:
    """`GET /users/{id}/badges`: the user's awards, newest first."""
    awards = await badges.awards_for(_user_id(user_id))
    return {"user": user_id, "count": len(awards), "awards": [_award(a) for a in awards]}


async def user_awards(user_id: str) -> list[dict[str, Any]]:
    """The user's awards as `user_badges` gives them, newest first, each with its `id` (which
    names its credential) and `user`."""
    return [_award_with_id(a) for a in await badges.awards_for(_user_id(user_id))]


async def user_history(user_id: str, limit: list[str], offset: list[str]) -> dict[str, Any]:
    """`GET /users/{id}/history?limit=20&offset=0`: a page of the changes of what the user
    holds, newest first. `limit` and `offset` are every value the query string gives each."""
    user_id = _user_id(user_id)
    page = _query_number("limit", limit, HISTORY_PAGE, 1, MAX_HISTORY_PAGE)
    start = _query_number("offset", offset, 0, 0, MAX_OFFSET)
    changes = await badges.history(user_id, limit=page, offset=start)
    return {"user": user_id, "changes": [_change(c) for c in changes]}


async def grant(user_id: str, body: bytes) -> dict[str, Any]:
    """`POST /users/{id}/grants` with `{"badge": slug, "level": n, "by": ..., "reason": ...}`
    (only "badge" required): award the badge by hand. `awarded` is None when the user holds
    that level already."""
    user_id = _user_id(user_id)
    slug, level, by, reason = _change_request(body)
    with _refusing_bad_changes():
        award = await badges.grant(user_id, slug, level, by=by, reason=reason)
    return {"awarded": None if award is None else _award(award)}


def granted_status(granted: dict[str, Any]) -> int:
    """The HTTP status of a grant's answer: 201 when it recorded an award, 200 when the user
    held that level already."""
    return 200 if granted["awarded"] is None else 201


async def revoke(user_id: str, body: bytes) -> dict[str, Any]:
    """`POST /users/{id}/revocations`, with the body of a grant: take away the user's awards of
    the badge (of that level only, if given); `revoked` says how many."""
    user_id = _user_id(user_id)
    slug, level, by, reason = _change_request(body)
    with _refusing_bad_changes():
        revoked = await badges.revoke(user_id, slug, level, by=by, reason=reason)
    return {"revoked": revoked}


async def user_unseen(user_id: str) -> dict[str, Any]:
    """`GET /users/{id}/unseen`: the user's awards not marked seen, newest first, each with its
    `id`, to give back to `POST /users/{id}/seen`."""
    unseen = await badges.unseen(_user_id(user_id))
    return {"user": user_id, "count": len(unseen), "awards": [_award_with_id(a) for a in unseen]}


async def mark_seen(user_id: str, body: bytes) -> dict[str, Any]:
    """`POST /users/{id}/seen` with `{"ids": [12, 13]}`: mark those of the user's unseen awards
    seen; with no body (or no `ids`), all of them. `marked` says how many were."""
    user_id = _user_id(user_id)
    data = _json(body) if body.strip() else {}
    unknown = sorted(set(data) - set(SEEN_FIELDS))
    if unknown:
        raise HTTPError(400, f"Unknown field {unknown[0][:80]!r}; the only field is 'ids'.")
    try:
        marked = await badges.mark_seen(user_id, data.get("ids"))
    except ValueError as exc:  # Ids that are not award ids: abadges names them.
        raise HTTPError(400, str(exc)) from None
    return {"marked": marked}


def open_notices(
    user_id: str, last_event_id: str | None, last_id: list[str]
) -> AsyncGenerator[dict[str, str], None]:
    """`GET /users/{id}/notices`: the user's notices as server-sent events, each a dict of
    its `id` (the notice's stream id), `event` ("notice") and `data` (one line of JSON, see
    `notice_data`), for the framework's SSE response to write.

    It resumes after `last_event_id`, the `Last-Event-ID` header a browser's `EventSource`
    sends when it reconnects, else after the `last_id` query parameter (every value the query
    string gives it), else from now on. A bad one is refused here, before the response starts,
    with the message of `subscribe()`."""
    user_id = _user_id(user_id)
    position = last_event_id or _query_text("last_id", last_id)
    try:
        notices = badges.subscribe(user_id, last_id=position)
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None
    return _notice_events(notices)


async def _notice_events(
    notices: AsyncGenerator[AwardNotice, None],
) -> AsyncGenerator[dict[str, str], None]:
    # The subscription's Redis connection is closed when the response closes this generator
    # (the client went away), or when a cancellation goes through it.
    try:
        async for notice in notices:
            yield {
                "id": notice.id,
                "event": NOTICE_EVENT,
                "data": json.dumps(notice_data(notice), separators=(",", ":")),
            }
    finally:
        await notices.aclose()


def notice_data(notice: AwardNotice) -> dict[str, Any]:
    """The `data` of a notice's event: its stream `id`, its `change` ("granted", "revoked",
    "expired", "replaced"), and the `award` as `GET /users/{id}/badges` gives one, with its
    `id` and `user`."""
    return {"id": notice.id, "change": notice.change, "award": _award_with_id(notice.award)}


def format_event(event: dict[str, str]) -> bytes:
    """An event of `open_notices()` as the lines of the stream, for a framework with no SSE
    library: its fields hold no line breaks (the data is one line of JSON)."""
    return f"id: {event['id']}\nevent: {event['event']}\ndata: {event['data']}\n\n".encode()


async def with_heartbeat(
    events: AsyncGenerator[dict[str, str], None], interval: float
) -> AsyncIterator[bytes]:
    """The events as the stream's bytes (`format_event`), and `PING` after every `interval`
    seconds without one, for a framework with no SSE library. Closing it closes `events`."""
    # A task of its own reads the events, for as long as the stream is open: cancelling a
    # wait for the next one would end the subscription.
    ready: asyncio.Queue[dict[str, str] | None] = asyncio.Queue(maxsize=1)

    async def relay() -> None:
        async for event in events:
            await ready.put(event)
        await ready.put(None)

    relaying = asyncio.ensure_future(relay())
    try:
        while True:
            try:
                event = await asyncio.wait_for(ready.get(), interval)
            except TimeoutError:
                if relaying.done():  # The events failed: their error ends the stream.
                    await relaying
                yield PING
                continue
            if event is None:
                return
            yield format_event(event)
    finally:
        relaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
        await events.aclose()


async def badge_list() -> list[dict[str, Any]]:
    """`GET /badges`: every badge, hidden ones included, each level with its name,
    description, image, points and award count; `expires_after` is in seconds."""
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
                    "image": badge.image_of(level),
                    "points": detail.points,
                    "awarded": awarded,
                }
            )
        listing.append(
            {
                "slug": slug,
                "group": badge.group,
                "hidden": badge.hidden,
                "multiple": badge.multiple,
                "deferred": badge.deferred,
                "temporary": badge.temporary,
                "replaces_lower": badge.replaces_lower,
                "expires_after": (
                    None if badge.expires_after is None else badge.expires_after.total_seconds()
                ),
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


async def user_progress(user_id: str) -> dict[str, Any]:
    """`GET /users/{id}/progress`: how far the user is toward the next level of each badge
    that measures it (`current` of `target`, in the badge's `unit`; `fraction` from 0 to 1).
    A hidden badge is left out until the user holds it."""
    user = await store.load_user(_user_id(user_id))
    progress = await badges.progress_for(user)
    return {
        "user": user.id,
        "progress": [
            _progress(p)
            for p in progress.values()
            if p.level > 0 or not badges.get_badge(p.slug).hidden
        ],
    }


async def badge_stats() -> list[dict[str, Any]]:
    """`GET /badges/stats`: for each level of every listed badge (hidden ones are left out),
    how many users hold it, their `share` of the site's members (0 to 1), and when it was
    first and last awarded (or `null`)."""
    members = await store.count_members()
    return [
        {
            "slug": s.slug,
            "level": s.level,
            "name": s.name,
            "holders": s.holders,
            "share": s.share,
            "first_awarded_at": _time(s.first_awarded_at),
            "latest_awarded_at": _time(s.latest_awarded_at),
        }
        for s in await badges.stats(total_users=members)
        if not badges.get_badge(s.slug).hidden
    ]


async def leaderboard(
    limit: list[str], offset: list[str], by: list[str], badge: list[str]
) -> dict[str, Any]:
    """`GET /leaderboard?limit=10&offset=0&by=points&badge=slug`: users ranked by the points
    of their badges (`by=points`, each level's `BadgeDetail.points`) or by how many they hold
    (`by=awards`), of one listed badge if `badge` is given. Ties share a rank (1, 2, 2, 4).
    Each parameter is every value the query string gives it."""
    page = _query_number("limit", limit, LEADERBOARD_PAGE, 1, MAX_LEADERBOARD_PAGE)
    start = _query_number("offset", offset, 0, 0, MAX_OFFSET)
    order: Literal["points", "awards"] = (
        "awards" if _query_choice("by", by, LEADERBOARD_ORDERS) == "awards" else "points"
    )
    slug = _query_choice("badge", badge, sorted(listed_badges()))
    standings = await badges.leaderboard(page, start, by=order, slug=slug)
    return {
        "by": order,
        "badge": slug,
        "limit": page,
        "offset": start,
        "standings": [
            {"rank": s.rank, "user": s.user_id, "points": s.points, "awards": s.awards}
            for s in standings
        ],
    }


def issuer_profile() -> Document:
    """`GET /openbadges/issuer`: the issuer's Open Badges `Profile`, which every credential
    names."""
    return _ld_json(badges.issuer_profile())


def achievement(slug: str, level: str) -> Document:
    """`GET /openbadges/achievements/{slug}/{level}`: the `Achievement` of a badge's level,
    which the credentials of its awards name (hidden badges too: their holders' credentials
    show them)."""
    try:
        badge = badges.get_badge(slug)
        number = badge.check_level(int(level) if level.isdecimal() else level)
    except (BadgeNotRegisteredError, InvalidLevelError) as exc:
        raise HTTPError(404, str(exc)) from None
    return _ld_json(badges.achievement(slug, number))


async def credential(award_id: str, format: list[str], accept: str | None) -> Document:
    """`GET /openbadges/credentials/{award_id}`: the `OpenBadgeCredential` of a held award, as
    JSON-LD; signed, as a VC-JWT file, for `?format=jwt`, or, without `format`, when the
    `Accept` header names application/vc+jwt. `format` is every value the query string gives
    it. An award that does not exist, or is no longer held, gets a 404."""
    number = _award_id(award_id)
    chosen = _query_choice("format", format, CREDENTIAL_FORMATS)
    if chosen is None:
        chosen = "jwt" if VC_JWT in (accept or "") else "json"
    with _refusing_missing_credentials():
        if chosen == "json":
            document = _ld_json(await badges.credential(number))
        else:
            token = await badges.credential_jwt(number)
            document = Document(token.encode(), VC_JWT, _attachment(f"credential-{number}.jwt"))
    # Vary: the same URL answers an Accept of application/vc+jwt with the JWT.
    document.headers["Vary"] = "Accept"
    return document


async def baked_credential(award_id: str) -> Document:
    """`GET /openbadges/credentials/{award_id}.png`: the picture of the award's badge level
    with its credential baked in (the VC-JWT, in the PNG's "openbadgecredential" chunk)."""
    number = _award_id(award_id)
    with _refusing_missing_credentials():
        found = await badges.credential(number)
        token = await badges.credential_jwt(number)
    # The achievement's id ends with the badge's slug and level.
    slug, level = found["credentialSubject"]["achievement"]["id"].rsplit("/", 2)[1:]
    path = pictures.picture(urllib.parse.unquote(slug), int(level))
    try:
        png = path.read_bytes()
    except FileNotFoundError:
        raise HTTPError(404, f"Badge {slug!r} level {level} has no PNG picture to bake.") from None
    return Document(bake_png(png, token), "image/png", _attachment(f"credential-{number}.png"))


def jwks() -> Document:
    """`GET /openbadges/jwks.json`: the JWK Set of the public keys the credentials are signed
    with."""
    return Document(json.dumps(badges.jwks()).encode(), JWK_SET)


async def status_list() -> Document:
    """`GET /openbadges/status`: the signed status list, whose bit `i` is set when award `i`
    was revoked or replaced. Never cached: a verifier must see a revocation at once."""
    return Document((await badges.status_list()).encode(), VC_JWT, {"Cache-Control": "no-store"})


def _ld_json(document: dict[str, Any]) -> Document:
    return Document(json.dumps(document, ensure_ascii=False).encode(), LD_JSON)


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


def _award_id(award_id: str) -> int:
    if not AWARD_ID.fullmatch(award_id):
        raise HTTPError(
            400, f"Award ids are whole numbers from 1, of up to 18 digits; got {award_id[:80]!r}."
        )
    return int(award_id)


@contextlib.contextmanager
def _refusing_missing_credentials() -> Iterator[None]:
    try:
        yield
    except CredentialError as exc:  # No such award, or one no longer held.
        raise HTTPError(404, str(exc)) from None


def listed_badges() -> dict[str, Badge]:
    """The badges shown to everyone, by slug in registration order: all but the hidden ones."""
    return {slug: badge for slug, badge in badges.registered.items() if not badge.hidden}


def _progress(progress: BadgeProgress) -> dict[str, Any]:
    badge = badges.get_badge(progress.slug)
    return {
        "slug": progress.slug,
        "level": progress.level,
        "next_level": progress.next_level,
        "name": None if progress.next_level is None else badge.detail(progress.next_level).name,
        # The example's badges name the unit they count in; abadges does not need one.
        "unit": getattr(badge, "unit", None),
        "current": progress.current,
        "target": progress.target,
        "fraction": progress.fraction,
    }


def _time(at: datetime.datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _award(award: Award) -> dict[str, Any]:
    return {
        "slug": award.slug,
        "level": award.level,
        "name": award.name,
        "description": award.description,
        "awarded_at": award.awarded_at.isoformat(),
        "source": award.source,
        "granted_by": award.granted_by,
        "reason": award.reason,
        "expires_at": None if award.expires_at is None else award.expires_at.isoformat(),
    }


def _award_with_id(award: Award) -> dict[str, Any]:
    return {"id": award.id, "user": award.user_id, **_award(award)}


def _change(change: AwardChange) -> dict[str, Any]:
    return {
        "action": change.action,
        "slug": change.slug,
        "level": change.level,
        "name": _level_name(change.slug, change.level),
        "at": change.at.isoformat(),
        "source": change.source,
        "by": change.by,
        "reason": change.reason,
    }


def _level_name(slug: str, level: int) -> str | None:
    # The history keeps the changes of badges, and of levels, that are no longer registered.
    badge = badges.registered.get(slug)
    if badge is None or not 1 <= level <= len(badge.levels):
        return None
    return badge.detail(level).name


def _change_request(body: bytes) -> tuple[str, int | None, Any, Any]:
    """The badge, level, `by` and `reason` of a grant's or a revocation's body; `by` and
    `reason` are checked by abadges, before it writes anything."""
    data = _json(body)
    unknown = sorted(set(data) - set(CHANGE_FIELDS))
    if unknown:
        raise HTTPError(
            400,
            f"Unknown field {unknown[0][:80]!r}; the fields are 'badge', 'level', 'by' and "
            "'reason'.",
        )
    slug = _field(data, "badge", str)
    level = None if data.get("level") is None else _field(data, "level", int)
    return slug, level, data.get("by"), data.get("reason")


@contextlib.contextmanager
def _refusing_bad_changes() -> Iterator[None]:
    try:
        yield
    except BadgeNotRegisteredError as exc:
        raise HTTPError(404, str(exc)) from None
    except (InvalidLevelError, ValueError) as exc:
        # ValueError: a `by` or `reason` that is not a str of the right length.
        raise HTTPError(400, str(exc)) from None


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


def _query_number(name: str, values: list[str], default: int, lowest: int, highest: int) -> int:
    if not values:
        return default
    if len(values) > 1:
        raise HTTPError(400, f"{name} must be given once; got it {len(values)} times.")
    [text] = values
    # At most 9 digits: int() of a long enough string is an error of its own.
    if not re.fullmatch(r"\d{1,9}", text, re.ASCII) or not lowest <= int(text) <= highest:
        raise HTTPError(
            400, f"{name} must be a whole number from {lowest} to {highest:,}; got {text[:80]!r}."
        )
    return int(text)


def _query_text(name: str, values: list[str]) -> str | None:
    if not values:
        return None
    if len(values) > 1:
        raise HTTPError(400, f"{name} must be given once; got it {len(values)} times.")
    return values[0]


def _query_choice(name: str, values: list[str], choices: Sequence[str]) -> str | None:
    if not values:
        return None
    if len(values) > 1:
        raise HTTPError(400, f"{name} must be given once; got it {len(values)} times.")
    [text] = values
    if text not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise HTTPError(400, f"{name} must be one of {listed}; got {text[:80]!r}.")
    return text


KINDS = {int: "a whole number", str: "a string"}


def _field(data: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HTTPError(400, f"{name!r} must be {KINDS[kind]}; got {json.dumps(value)[:80]}.")
    return value
