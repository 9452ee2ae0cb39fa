"""The example site's users for a backfill: the badges they qualify for, awarded after the fact.

    abadges backfill --users examples.backfill:users [--dry-run] [--checkpoint NAME]

with the `ABADGES_*` settings of the site (the demo runs it for users imported from an older
site, who hold no badge yet). `users()` streams the users from the example's table, a page at a
time, in the order of their ids, as a resumed run needs them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import sqlalchemy as sa

from abadges import badges

from . import store

#: Users read per query.
PAGE = 1000


async def users() -> AsyncIterator[store.User]:
    """Every user of the example site, by id, read `PAGE` at a time over abadges' connection."""
    after: str | None = None
    while True:
        query = sa.select(store.users.c.id, store.users.c.points).order_by(store.users.c.id)
        if after is not None:
            query = query.where(store.users.c.id > after)
        rows = await badges.database.fetch_all(query.limit(PAGE))
        for row in rows:
            yield store.User(row[0], row[1])
        if len(rows) < PAGE:
            return
        after = rows[-1][0]
