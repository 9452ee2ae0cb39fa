"""The example site's own data, users' points and visits, kept in the awards' database.

It uses the connection abadges holds (`badges.database`), so the apps need no second pool and
the worker's user loader can read users too. `python -m examples.store` creates these tables
and abadges' table in `ABADGES_DATABASE_URL`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.schema import CreateTable

from abadges import badges

metadata = sa.MetaData()

users = sa.Table(
    "example_users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("points", sa.Integer(), nullable=False),
)

visits = sa.Table(
    "example_visits",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date(), primary_key=True),
)


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    points: int = 0


async def load_user(user_id: str) -> User:
    """The user loader of the worker (`ABADGES_USER_LOADER=examples.store:load_user`)."""
    row = await badges.database.fetch_one(sa.select(users.c.points).where(users.c.id == user_id))
    return User(user_id, row[0] if row is not None else 0)


async def add_points(user_id: str, points: int) -> User:
    """Add `points` to the user, creating the user on first use; returns the updated user."""
    async with badges.database.transaction():
        await badges.database.execute(_insert_ignore(users).values(id=user_id, points=0))
        await badges.database.execute(
            users.update().where(users.c.id == user_id).values(points=users.c.points + points)
        )
        return await load_user(user_id)


async def add_visit(user_id: str, day: datetime.date) -> None:
    """Record that the user visited on `day`; a second visit the same day changes nothing."""
    await badges.database.execute(_insert_ignore(visits).values(user_id=user_id, day=day))


async def visit_days(user_id: str, first: datetime.date, last: datetime.date) -> set[datetime.date]:
    """The days from `first` to `last`, both included, on which the user visited."""
    query = sa.select(visits.c.day).where(
        visits.c.user_id == user_id, visits.c.day.between(first, last)
    )
    return {_date(row[0]) for row in await badges.database.fetch_all(query)}


async def visit_streak(user_id: str, longest: int) -> int:
    """How many days in a row, up to `longest`, the user visited, ending on the latest visit."""
    query = (
        sa.select(visits.c.day)
        .where(visits.c.user_id == user_id)
        .order_by(visits.c.day.desc())
        .limit(longest)
    )
    days = [_date(row[0]) for row in await badges.database.fetch_all(query)]
    streak = 0
    for n, day in enumerate(days):
        if day != days[0] - datetime.timedelta(days=n):
            break
        streak += 1
    return streak


async def count_members() -> int:
    """How many users the site knows: those with points and those who visited."""
    known = sa.union(sa.select(users.c.id), sa.select(visits.c.user_id)).subquery()
    return int(await badges.database.fetch_val(sa.select(sa.func.count()).select_from(known)))


async def create_tables() -> None:
    """Create abadges' awards table and the example's tables if they do not exist."""
    await badges.create_tables()
    for table in metadata.sorted_tables:
        await badges.database.execute(CreateTable(table, if_not_exists=True))


def _insert_ignore(table: sa.Table) -> sa.Insert:
    """An INSERT that does nothing when the row's primary key exists already."""
    dialect = badges.database.url.dialect
    if dialect == "mysql":
        key = table.primary_key.columns[0]
        return mysql.insert(table).on_duplicate_key_update({key.name: key})
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(
        table
    ).on_conflict_do_nothing()


def _date(value: datetime.date | str) -> datetime.date:
    # SQLite has no date type: aiosqlite hands back the ISO string.
    return datetime.date.fromisoformat(value) if isinstance(value, str) else value


async def main() -> None:
    async with badges.lifespan():
        await create_tables()
    print(f"Tables ready in {badges.settings.database_url}")


if __name__ == "__main__":
    asyncio.run(main())
