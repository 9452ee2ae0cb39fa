"""Leaderboards, standings and badge statistics, read from the totals that the database's
triggers keep (`abadges_totals`, `abadges_level_counts`: revision 0006).

The triggers count every award row that is not revoked, and an expired award stays in the
awards table until the periodic job moves it. So each query first looks for awards that have
expired and not been moved (one probe of the expiry index):

- none (the usual case): the totals are exact, and a leaderboard page is read in the order
  of their index, its first rank counted in the same index;
- some: the same figures are computed with those awards taken off, over every row of the
  scope (slower, and exact);
- a leaderboard `since` a time is computed from the awards of that time, with the index of
  `awarded_at`.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ..standings import RankBy, Standing
from ..tables import awards, level_counts, totals
from .base import Store, held, text, utc

#: The slug of the totals of all a user's badges.
ALL = ""


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
                if since is None and not await self._expired_unmoved(connection, slug, now):
                    query = (
                        sa.select(totals.c.user_id, totals.c.points, totals.c.awards)
                        .where(totals.c.slug == (slug or ALL), totals.c.awards > 0)
                        .order_by(totals.c[by].desc(), totals.c.user_id)
                        .limit(limit)
                        .offset(offset)
                    )
                    rows = await connection.fetch_all(query)
                    if not rows:
                        return []
                    # No `awards > 0`: a row above has more points (or awards) than one
                    # held, so it holds something. The count is then a range of one index.
                    above = sa.select(sa.func.count()).where(
                        totals.c.slug == (slug or ALL), totals.c[by] > rows[0][by]
                    )
                    first = int(await connection.fetch_val(above)) + 1
                    return _ranked(rows, by, offset, first)
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
        return [_standing(row, int(row["rank"])) for row in rows]

    async def standing(
        self, user_id: str, by: RankBy, slug: str | None, since: datetime.datetime | None
    ) -> Standing | None:
        async with self._store.connection() as connection:
            with self._store.translating_errors():
                now = self._store.now()
                if since is None and not await self._expired_unmoved(connection, slug, now):
                    scores: Any = totals.select().where(totals.c.slug == (slug or ALL)).subquery()
                else:
                    scores = self._scores(slug, since, now).subquery("scores")
                mine = sa.select(scores.c.user_id, scores.c.points, scores.c.awards).where(
                    scores.c.user_id == user_id, scores.c.awards > 0
                )
                row = await connection.fetch_one(mine)
                if row is None:
                    return None
                # No `awards > 0`, as in leaderboard(): more than a holder's is held.
                above = sa.select(sa.func.count()).where(scores.c[by] > row[by])
                return _standing(row, int(await connection.fetch_val(above)) + 1)

    async def holders(self, scopes: Sequence[str | None]) -> dict[str | None, int]:
        """How many users hold a badge of each scope: a slug, or None for any badge."""
        found: dict[str | None, int] = {}
        async with self._store.connection() as connection:
            with self._store.translating_errors():
                now = self._store.now()
                for scope in scopes:
                    scores: Any
                    if await self._expired_unmoved(connection, scope, now):
                        scores = self._scores(scope, None, now).subquery("scores")
                    else:
                        scores = totals.select().where(totals.c.slug == (scope or ALL)).subquery()
                    query = sa.select(sa.func.count()).where(scores.c.awards > 0)
                    found[scope] = int(await connection.fetch_val(query))
        return found

    async def level_awards(self) -> dict[tuple[str, int], int]:
        """How many awards each (slug, level) has held, for those with at least one."""
        counted = sa.select(
            level_counts.c.slug, level_counts.c.level, sa.func.sum(level_counts.c.awards)
        ).group_by(level_counts.c.slug, level_counts.c.level)
        async with self._store.connection() as connection:
            with self._store.translating_errors():
                found = {
                    (text(row[0]), int(row[1])): int(row[2])
                    for row in await connection.fetch_all(counted)
                }
                gone = sa.select(awards.c.slug, awards.c.level, sa.func.count())
                gone = gone.where(*_expired(self._store.now()))
                for row in await connection.fetch_all(gone.group_by(awards.c.slug, awards.c.level)):
                    key = (text(row[0]), int(row[1]))
                    found[key] = found.get(key, 0) - int(row[2])
        return {key: count for key, count in found.items() if count > 0}

    async def dates(
        self, levels: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[datetime.datetime | None, datetime.datetime | None]]:
        """The first and the latest `awarded_at` of the awards held of each (slug, level), in
        one query: two scalar subqueries a level, each a walk of the holders' index from one
        end to the first award held."""
        if not levels:
            return {}
        now = self._store.now()
        columns: list[sa.Label[Any]] = []
        for slug, level in levels:
            where = (awards.c.slug == slug, awards.c.level == level, held(now))
            for order in (awards.c.awarded_at, awards.c.awarded_at.desc()):
                first = sa.select(awards.c.awarded_at).where(*where).order_by(order).limit(1)
                columns.append(first.scalar_subquery().label(f"at{len(columns)}"))
        async with self._store.connection() as connection:
            with self._store.translating_errors():
                row = await connection.fetch_one(sa.select(*columns))
        assert row is not None
        return {
            key: (utc(row[f"at{2 * i}"]), utc(row[f"at{2 * i + 1}"]))
            for i, key in enumerate(levels)
        }

    async def _expired_unmoved(
        self, connection: Any, slug: str | None, now: datetime.datetime
    ) -> bool:
        """Are there awards (of the badge, if given) that have expired and are still counted
        in the totals, waiting for the periodic job?"""
        query = sa.select(awards.c.id).where(*_expired(now))
        if slug is not None:
            query = query.where(awards.c.slug == slug)
        return await connection.fetch_one(query.limit(1)) is not None

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


def _expired(now: datetime.datetime) -> tuple[sa.ColumnElement[bool], ...]:
    """The awards that have expired and are still counted: not revoked, not yet moved."""
    return (awards.c.revoked_at.is_(None), awards.c.expires_at <= now)


def _standing(row: Any, rank: int) -> Standing:
    return Standing(rank, text(row["user_id"]), int(row["points"]), int(row["awards"]))


def _ranked(rows: Sequence[Any], by: RankBy, offset: int, first: int) -> list[Standing]:
    """The standings of a page of rows in leaderboard order, its first row ranked `first`:
    a row ties with the one before it, or is ranked by its place."""
    standings: list[Standing] = []
    for place, row in enumerate(rows, start=offset + 1):
        if standings and row[by] == rows[place - offset - 2][by]:
            rank = standings[-1].rank
        else:
            rank = first if not standings else place
        standings.append(_standing(row, rank))
    return standings
