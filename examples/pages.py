"""What the Starlette app's HTML pages show: the context of each template in
`examples/templates/`, built from the same calls as the JSON endpoints of `api.py`.

Every value a user can write (a reason, a user id) reaches the page through Jinja2's
autoescaping; the moderators' ids (`by`) never reach it.
"""

from __future__ import annotations

import collections
import datetime
from typing import Any

from abadges import Badge, badges

from . import api, store

#: The look of a level, by its position among the badge's levels.
TIERS = ("bronze", "silver", "gold")
#: How many of a level's latest holders the catalogue links to.
LATEST_HOLDERS = 5
#: The leaderboard page's length.
LEADERBOARD_PAGE = 25
ACTIONS = {
    "granted": "Earned",
    "revoked": "Taken away",
    "expired": "Expired",
    "replaced": "Replaced",
}


async def catalogue() -> dict[str, Any]:
    """`/`: every listed badge, under its group, each level with its holders and rarity."""
    members = await store.count_members()
    stats = {(s["slug"], s["level"]): s for s in await api.badge_stats()}
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for slug, badge in api.listed_badges().items():
        levels = []
        for level in range(1, len(badge.levels) + 1):
            detail = badge.detail(level)
            stat = stats.get((slug, level), {"holders": 0, "share": 0.0})
            # A `multiple` badge's holder can have several of the latest awards: each is named once.
            awards = await badges.holders(slug, level, limit=LATEST_HOLDERS * 4)
            latest = list(dict.fromkeys(a.user_id for a in awards))[:LATEST_HOLDERS]
            levels.append(
                {
                    "level": level,
                    "name": detail.name,
                    "description": detail.description,
                    "image": badge.image_of(level),
                    "tier": tier(badge, level),
                    "points": detail.points,
                    "holders": _count(stat["holders"], "holder"),
                    "rarity": rarity(stat["share"]),
                    "latest": latest,
                    "more": stat["holders"] > len(latest),
                }
            )
        groups[badge.group or "Other"].append(
            {"slug": slug, "title": title(badge), "notes": notes(badge), "levels": levels}
        )
    return {"page": "catalogue", "members": _count(members, "member"), "groups": groups}


async def user(user_id: str) -> dict[str, Any]:
    """`/users/{id}`: the badges held (one held several times, once with its count), the
    progress toward the next levels, and the latest changes, with their reasons; the ids of
    the unseen awards, which the header counts. Each badge held links to the Open Badges
    credential of its newest award: the VC-JWT file, and the PNG with it baked in."""
    awards = await api.user_awards(user_id)
    progress = (await api.user_progress(user_id))["progress"]
    changes = (await api.user_history(user_id, [], []))["changes"]
    standing = await badges.standing(user_id)
    site_user = await store.load_user(user_id)
    unseen = (await api.user_unseen(user_id))["awards"]

    times = collections.Counter((a["slug"], a["level"]) for a in awards)
    newest: dict[tuple[str, int], dict[str, Any]] = {}
    for award in awards:
        newest.setdefault((award["slug"], award["level"]), award)
    held = []
    for (slug, level), award in newest.items():
        badge = badges.registered.get(slug)
        held.append(
            {
                "slug": slug,
                "level": level,
                "name": award["name"] or slug,
                "description": award["description"],
                "image": None if badge is None else badge.image_of(level),
                "tier": "plain" if badge is None else tier(badge, level),
                "times": times[slug, level],
                "earned": _day(award["awarded_at"]),
                "expires": award["expires_at"] and _day(award["expires_at"]),
                "credential": f"/openbadges/credentials/{award['id']}?format=jwt",
                "baked": f"/openbadges/credentials/{award['id']}.png",
            }
        )
    return {
        "page": "user",
        "user": user_id,
        "points": f"{site_user.points:,}",
        "standing": standing,
        "held": held,
        "progress": [_bar(p) for p in progress if p["next_level"] is not None],
        # The header's count of new badges, and what notices.js needs to keep it and to show
        # a toast with the badge's picture as each notice comes.
        "unseen": [a["id"] for a in unseen],
        "images": images(),
        "changes": [
            {
                "day": _day(c["at"]),
                "action": c["action"],
                "verb": ACTIONS.get(c["action"], c["action"]),
                "name": c["name"] or c["slug"],
                "reason": c["reason"],
            }
            for c in changes
        ],
    }


async def leaderboard(by: list[str], badge: list[str]) -> dict[str, Any]:
    """`/leaderboard`: the first users by badge points or by badges held, of one badge if
    `badge` is given."""
    board = await api.leaderboard([str(LEADERBOARD_PAGE)], [], by, badge)
    listed = api.listed_badges()
    return {
        "page": "leaderboard",
        "by": board["by"],
        "badge": board["badge"],
        "badge_title": None if board["badge"] is None else title(listed[board["badge"]]),
        "badges": [{"slug": slug, "title": title(b)} for slug, b in listed.items()],
        "standings": board["standings"],
    }


def images() -> dict[str, str]:
    """The picture of each level of every registered badge, by "slug:level"."""
    return {
        f"{slug}:{level}": image
        for slug, badge in badges.registered.items()
        for level in range(1, len(badge.levels) + 1)
        if (image := badge.image_of(level)) is not None
    }


def tier(badge: Badge, level: int) -> str:
    """The look of a level: bronze for the first of several, gold for the last, silver
    between; "plain" for a badge of one level."""
    count = len(badge.levels)
    if count == 1:
        return "plain"
    return TIERS[round((level - 1) * (len(TIERS) - 1) / (count - 1))]


def title(badge: Badge) -> str:
    """What a badge is called: its level's name if it has one, else its slug, capitalised."""
    if len(badge.levels) == 1:
        return badge.detail(1).name
    return badge.slug.replace("_", " ").replace("-", " ").capitalize()


def notes(badge: Badge) -> list[str]:
    """Short facts about how a badge is held."""
    facts = []
    if badge.multiple:
        facts.append("Can be earned again")
    if badge.expires_after is not None:
        facts.append(f"Lasts {_duration(badge.expires_after)}")
    if badge.deferred:
        facts.append("Checked in the background")
    return facts


def rarity(share: float) -> str:
    """A share of the members (0 to 1) as the catalogue says it."""
    if share <= 0:
        return "Not earned yet"
    if share < 0.01:
        return "Under 1% of members"
    return f"{round(share * 100)}% of members"


def _bar(progress: dict[str, Any]) -> dict[str, Any]:
    badge = badges.get_badge(progress["slug"])
    unit = progress["unit"] or ""
    return {
        "slug": progress["slug"],
        "name": progress["name"],
        "image": badge.image_of(progress["next_level"]),
        "tier": tier(badge, progress["next_level"]),
        "percent": f"{progress['fraction'] * 100:.1f}".removesuffix(".0"),
        "label": f"{_number(progress['current'])} / {_number(progress['target'])} {unit}".strip(),
    }


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _day(at: str) -> str:
    return datetime.datetime.fromisoformat(at).strftime("%-d %b %Y")


def _duration(delta: datetime.timedelta) -> str:
    if delta == datetime.timedelta(days=7):
        return "a week"
    if delta.days:
        return _count(delta.days, "day")
    return _count(round(delta.total_seconds() / 3600), "hour")
