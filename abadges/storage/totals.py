"""Leaderboards, standings and badge statistics, read from the totals that the database's
triggers keep (`abadges_totals`, `abadges_level_counts`: revision 0006).

The triggers count every award row that is not revoked, and an expired award stays in the
awards table until the periodic job moves it. So each query first reads the awards that have
expired and not been moved (a range of the expiry index, empty in the usual case), summed by
user:

- none: the totals are exact, and a leaderboard page is read in the order of their index,
  its first rank counted in the same index;
- up to `LAPSED_USERS` users: the same reads, and the lapsed users' figures taken off in
  Python; their new places are worked out from the page, a window of `2 * lapsed` more rows,
  and the one count of those ranked above;
- more: the figures are computed with the expired awards taken off, over every row of the
  scope (slower, and exact);
- a leaderboard `since` a time is computed from the awards of that time, with the index of
  `awarded_at`.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..standings import RankBy, Standing
from ..tables import awards, level_counts, totals
from .base import Store, held, text, utc

#: The slug of the totals of all a user's badges.
ALL = ""
#: The level of `abadges_level_counts` that counts the holders of a slug (revision 0006).
HOLDERS = 0
#: Beyond this many users with awards expired and not moved, the figures are computed.
LAPSED_USERS = 500

#: A user's figures: (user_id, points, awards).
Figures = tuple[str, int, int]
#: Users' figures by user id: (points, awards).
Scores = dict[str, tuple[int, int]]


class Totals:
    """The presentation's queries on `store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def leaderboard(
        self,
        limit: int,
        offset: int,
        by: RankBy,
        slug: str | None,
        since: datetime.datetime | None,
    ) -> list[Standing]:
        async with self._store.connection() as connection:
            with self._store.translating_errors():
                now = self._store.now()
                lapsed = None if since is not None else await self._lapsed(connection, now)
                if lapsed is not None:
                    page = await _Scope(connection, slug, by, lapsed.get(slug)).page(limit, offset)
                    if page is not None:
                        return page
                return await self._computed_page(connection, limit, offset, by, slug, since, now)

    async def standing(
        self, user_id: str, by: RankBy, slug: str | None, since: datetime.datetime | None
    ) -> Standing | None:
        async with self._store.connection() as connection:
            with self._store.translating_errors():
                now = self._store.now()
                lapsed = None if since is not None else await self._lapsed(connection, now)
                if lapsed is not None:
                    return await _Scope(connection, slug, by, lapsed.get(slug)).standing(user_id)
                scores = self._scores(slug, since, now).subquery("scores")
                mine = sa.select(scores.c.user_id, scores.c.points, scores.c.awards).where(
                    scores.c.user_id == user_id, scores.c.awards > 0
                )
                row = await connection.fetch_one(mine)
                if row is None:
                    return None
                # No `awards > 0`: a row with more than a holder's holds something.
                above = sa.select(sa.func.count()).where(scores.c[by] > row[by])
                return _standing(_figures(row), int(await connection.fetch_val(above)) + 1)

    async def stats(
        self, levels: Sequence[tuple[str, int]], scopes: Sequence[str | None]
    ) -> tuple[dict[tuple[str, int], int], dict[str | None, int], dict[tuple[str, int], Dates]]:
        """For `stats()`: how many awards each (slug, level) holds, how many users hold a badge
        of each scope (a slug, or None for any), and each level's first and latest award."""
        async with self._store.connection() as connection:
            with self._store.translating_errors():
                now = self._store.now()
                counted = sa.select(
                    level_counts.c.slug, level_counts.c.level, sa.func.sum(level_counts.c.awards)
                ).group_by(level_counts.c.slug, level_counts.c.level)
                found = {
                    (text(row[0]), int(row[1])): int(row[2])
                    for row in await connection.fetch_all(counted)
                }
                lapsed = await self._lapsed(connection, now)
                holders: dict[str | None, int] = {}
                for scope in scopes:
                    if lapsed is None:
                        scores = self._scores(scope, None, now).subquery("scores")
                        query = sa.select(sa.func.count()).where(scores.c.awards > 0)
                        holders[scope] = int(await connection.fetch_val(query))
                    else:
                        held_by = found.get((scope or ALL, HOLDERS), 0)
                        scoped = _Scope(connection, scope, "awards", lapsed.get(scope))
                        holders[scope] = held_by - await scoped.emptied()
                gone = sa.select(awards.c.slug, awards.c.level, sa.func.count())
                gone = gone.where(*_expired(now)).group_by(awards.c.slug, awards.c.level)
                for row in await connection.fetch_all(gone):
                    key = (text(row[0]), int(row[1]))
                    found[key] = found.get(key, 0) - int(row[2])
                dates = await _dates(connection, levels, now)
        awarded = {key: count for key, count in found.items() if key[1] != HOLDERS and count > 0}
        return awarded, holders, dates

    async def _lapsed(self, connection: Any, now: datetime.datetime) -> Lapsed | None:
        """The figures of the awards expired and not moved, by scope (each slug, and None for
        all) and user; None for more than `LAPSED_USERS` users."""
        query = (
            sa.select(
                awards.c.user_id, awards.c.slug, sa.func.sum(awards.c.points), sa.func.count()
            )
            .where(*_expired(now))
            .group_by(awards.c.user_id, awards.c.slug)
            .limit(LAPSED_USERS + 1)
        )
        rows = await connection.fetch_all(query)
        if len(rows) > LAPSED_USERS:
            return None
        lapsed: Lapsed = {}
        for row in rows:
            user_id, slug, points, count = text(row[0]), text(row[1]), int(row[2]), int(row[3])
            for scope in (slug, None):
                users = lapsed.setdefault(scope, {})
                p, n = users.get(user_id, (0, 0))
                users[user_id] = (p + points, n + count)
        return lapsed

    async def _computed_page(
        self,
        connection: Any,
        limit: int,
        offset: int,
        by: RankBy,
        slug: str | None,
        since: datetime.datetime | None,
        now: datetime.datetime,
    ) -> list[Standing]:
        scores = self._scores(slug, since, now).subquery("scores")
        value = scores.c[by]
        query = (
            sa.select(
                scores.c.user_id,
                scores.c.points,
                scores.c.awards,
                sa.func.rank().over(order_by=value.desc()).label("rank"),
            )
            .order_by(value.desc(), scores.c.user_id)
            .limit(limit)
            .offset(offset)
        )
        rows = await connection.fetch_all(query)
        return [_standing(_figures(row), int(row["rank"])) for row in rows]

    def _scores(
        self, slug: str | None, since: datetime.datetime | None, now: datetime.datetime
    ) -> sa.Select[Any]:
        """Each user's (user_id, points, awards) of the scope, computed: from the awards since
        `since`, or from the totals less the awards expired and not moved."""
        if since is not None:
            query = sa.select(
                awards.c.user_id,
                sa.func.sum(awards.c.points).label("points"),
                sa.func.count().label("awards"),
            ).where(held(now), awards.c.awarded_at >= self._store.stored(since))
            if slug is not None:
                query = query.where(awards.c.slug == slug)
            return query.group_by(awards.c.user_id)
        gone = sa.select(
            awards.c.user_id,
            sa.func.sum(awards.c.points).label("points"),
            sa.func.count().label("awards"),
        ).where(*_expired(now))
        if slug is not None:
            gone = gone.where(awards.c.slug == slug)
        expired = gone.group_by(awards.c.user_id).subquery("expired")
        count = totals.c.awards - sa.func.coalesce(expired.c.awards, 0)
        return (
            sa.select(
                totals.c.user_id,
                (totals.c.points - sa.func.coalesce(expired.c.points, 0)).label("points"),
                count.label("awards"),
            )
            .select_from(totals.outerjoin(expired, totals.c.user_id == expired.c.user_id))
            .where(totals.c.slug == (slug or ALL), count > 0)
        )


#: The awards expired and not moved: by scope (a slug, or None for all), by user.
Lapsed = dict[str | None, Scores]
#: A level's first and latest `awarded_at` of the awards held.
Dates = tuple[datetime.datetime | None, datetime.datetime | None]


class _Scope:
    """The totals of one scope (a badge, or all) on `connection`, ranked `by`, with the
    figures of `lapsed` users (awards expired and not moved) taken off."""

    def __init__(
        self, connection: Any, slug: str | None, by: RankBy, lapsed: Scores | None
    ) -> None:
        self._connection = connection
        self._slug = slug or ALL
        self._by = by
        self._lapsed = lapsed or {}

    async def page(self, limit: int, offset: int) -> list[Standing] | None:
        """The leaderboard's page; None where it cannot be read from the totals (a page past
        every user left in place by the lapsed)."""
        counted = await self._counted_of_lapsed()
        left = self._left(counted)
        # The users not lapsed keep their order, and each lapsed one only moves down: those
        # of the page are among the index's rows from `offset`, and `2 * lapsed` more.
        spare = 2 * len(counted)
        query = (
            sa.select(totals.c.user_id, totals.c.points, totals.c.awards)
            .where(totals.c.slug == self._slug, totals.c.awards > 0)
            .order_by(totals.c[self._by].desc(), totals.c.user_id)
            .limit(limit + spare)
            .offset(offset)
        )
        window = [_figures(row) for row in await self._connection.fetch_all(query)]
        if not counted:
            page = window[:limit]
        else:
            kept = [
                (place, row) for place, row in enumerate(window, offset) if row[0] not in counted
            ]
            if not kept:
                return None
            place, first = kept[0]
            start = self._key(first)
            # The first kept row's place, less the lapsed users that were above it and are not.
            place -= sum(
                1
                for user, figures in counted.items()
                if self._key((user, *figures)) < start
                and (user not in left or self._key((user, *left[user])) > start)
            )
            moved = sorted(((user, *figures) for user, figures in left.items()), key=self._key)
            before = [row for row in moved if self._key(row) < start]
            # Sorted with the lapsed users placed below `first`. The page ends before the
            # last kept row (`limit + lapsed` of them, at most `lapsed` skipped), so that no
            # row beyond the window can come between.
            after = sorted(
                [row for _, row in kept] + [row for row in moved if start < self._key(row)],
                key=self._key,
            )
            if place > offset:
                segment = before[len(before) - (place - offset) :] + after
            else:
                segment = after[offset - place :]
            page = segment[:limit]
        if not page:
            return []
        first_rank = await self._above(self._of(page[0]), counted, left) + 1
        return _ranked(page, by_points=self._by == "points", offset=offset, first=first_rank)

    async def standing(self, user_id: str) -> Standing | None:
        counted = await self._counted_of_lapsed()
        left = self._left(counted)
        if user_id in counted:
            figures = left.get(user_id)
        else:
            query = sa.select(totals.c.points, totals.c.awards).where(
                totals.c.slug == self._slug, totals.c.user_id == user_id, totals.c.awards > 0
            )
            row = await self._connection.fetch_one(query)
            figures = None if row is None else (int(row[0]), int(row[1]))
        if figures is None:
            return None
        mine = (user_id, *figures)
        return _standing(mine, await self._above(self._of(mine), counted, left) + 1)

    async def emptied(self) -> int:
        """How many users hold something of the scope in the totals, and nothing once the
        lapsed awards are taken off."""
        counted = await self._counted_of_lapsed()
        return len(counted) - len(self._left(counted))

    async def _counted_of_lapsed(self) -> Scores:
        """The lapsed users' figures in the totals."""
        if not self._lapsed:
            return {}
        query = sa.select(totals.c.user_id, totals.c.points, totals.c.awards).where(
            totals.c.slug == self._slug, totals.c.user_id.in_(sorted(self._lapsed))
        )
        return {
            text(row[0]): (int(row[1]), int(row[2]))
            for row in await self._connection.fetch_all(query)
        }

    def _left(self, counted: Mapping[str, tuple[int, int]]) -> Scores:
        """The lapsed users' figures less their lapsed awards, of those still holding any."""
        left = {}
        for user, (points, count) in counted.items():
            gone_points, gone = self._lapsed[user]
            if count - gone > 0:
                left[user] = (points - gone_points, count - gone)
        return left

    async def _above(
        self,
        value: int,
        counted: Mapping[str, tuple[int, int]],
        left: Mapping[str, tuple[int, int]],
    ) -> int:
        """How many users of the scope have more than `value`, the lapsed ones' awards off."""
        # No `awards > 0`: a row with more than a holder's holds something.
        query = sa.select(sa.func.count()).where(
            totals.c.slug == self._slug, totals.c[self._by] > value
        )
        count = int(await self._connection.fetch_val(query))
        count -= sum(1 for user, figures in counted.items() if self._of((user, *figures)) > value)
        return count + sum(
            1 for user, figures in left.items() if self._of((user, *figures)) > value
        )

    def _of(self, row: Figures) -> int:
        """The figure that ranks `row`."""
        return row[1] if self._by == "points" else row[2]

    def _key(self, row: Figures) -> tuple[int, str]:
        """A row's place in the leaderboard's order: most first, ties by user id."""
        return (-self._of(row), row[0])


async def _dates(
    connection: Any, levels: Sequence[tuple[str, int]], now: datetime.datetime
) -> dict[tuple[str, int], Dates]:
    """The first and the latest `awarded_at` of the awards held of each (slug, level), in one
    query: two scalar subqueries a level, each a walk of the holders' index from one end to
    the first award held."""
    if not levels:
        return {}
    parameters = [sa.bindparam("now", now, type_=awards.c.expires_at.type)]
    for i, (slug, level) in enumerate(levels):
        parameters.append(sa.bindparam(f"s{i}", slug, type_=awards.c.slug.type))
        parameters.append(sa.bindparam(f"l{i}", level, type_=awards.c.level.type))
    names = {f"at{i}": awards.c.awarded_at.type for i in range(2 * len(levels))}
    query = sa.text(_dates_sql(len(levels))).bindparams(*parameters).columns(**names)
    row = await connection.fetch_one(query)
    assert row is not None
    return {
        key: (utc(row[f"at{2 * i}"]), utc(row[f"at{2 * i + 1}"])) for i, key in enumerate(levels)
    }


@functools.cache
def _dates_sql(count: int) -> str:
    """The SQL of `_dates()` for `count` levels, written once: a statement of 2 * `count`
    subqueries takes SQLAlchemy longer to compile, at each call, than the database to run."""
    held_now = (
        f"{awards.c.revoked_at.name} IS NULL AND "
        f"({awards.c.expires_at.name} IS NULL OR {awards.c.expires_at.name} > :now)"
    )
    columns: list[str] = []
    for i in range(count):
        for order in ("", " DESC"):
            columns.append(
                f"(SELECT awarded_at FROM {awards.name} WHERE slug = :s{i} AND level = :l{i} "
                f"AND {held_now} ORDER BY awarded_at{order} LIMIT 1) AS at{len(columns)}"
            )
    return "SELECT " + ", ".join(columns)


def _expired(now: datetime.datetime) -> tuple[sa.ColumnElement[bool], ...]:
    """The awards that have expired and are still counted: not revoked, not yet moved."""
    return (awards.c.revoked_at.is_(None), awards.c.expires_at <= now)


def _figures(row: Any) -> Figures:
    return (text(row["user_id"]), int(row["points"]), int(row["awards"]))


def _standing(row: Figures, rank: int) -> Standing:
    return Standing(rank, *row)


def _ranked(rows: Sequence[Figures], *, by_points: bool, offset: int, first: int) -> list[Standing]:
    """The standings of a page of rows in leaderboard order, its first row ranked `first`:
    a row ties with the one before it, or is ranked by its place."""
    standings: list[Standing] = []
    value = 1 if by_points else 2
    for place, row in enumerate(rows, start=offset + 1):
        if standings and row[value] == rows[place - offset - 2][value]:
            rank = standings[-1].rank
        else:
            rank = first if not standings else place
        standings.append(_standing(row, rank))
    return standings
