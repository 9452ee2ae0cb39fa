"""The inserts of concurrent calls, joined into one (`abadges._batching`): one statement and one
commit for the awards of every event that waited for the database meanwhile.

Each caller still gets exactly its own part of what the shared insert did:

- an award that two callers of the batch would both record (the same user, level and award
  key: two events racing for one badge) is inserted once, and is the first caller's; the
  others find it held, as they would have one after the other;
- a caller whose awards share a user and level with an earlier caller's under other award
  keys (a `multiple` badge) waits for the next statement of the batch, so that each award
  recorded belongs to one caller, found by its user, badge and level;
- an insert of `ALONE` awards or more (a backfill's batch) runs at once, alone;
- when the shared insert fails, each caller's insert runs again alone, and gets its own
  result or error; a connection error, after which the database may have committed the
  insert or not, is every caller's error, as it would have been alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._batching import Batcher
from ..awards import Award
from ..exceptions import is_transient
from .base import NewAward, Store, Written

#: An insert of this many awards or more is a batch already (a backfill's): it runs at once,
#: beside the one in flight, so that a backfill's concurrent batches keep running in parallel.
ALONE = 100
#: (user_id, slug, level): who owns an award recorded, or an expired award it replaced.
Owner = tuple[str, str, int]


class GroupCommit:
    """`insert()` as `Store.insert()`, joined with the inserts that wait for the one in flight."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._batcher = Batcher[Sequence[NewAward], Written](self._insert_parts)

    async def insert(self, new_awards: Sequence[NewAward]) -> Written:
        """Record `new_awards` as `Store.insert()` does, in the next statement of the batch."""
        if len(new_awards) >= ALONE:
            return await self._store.insert(new_awards)
        return await self._batcher(new_awards)

    async def _insert_parts(self, parts: list[Sequence[NewAward]]) -> list[Written | Exception]:
        if len(parts) == 1:
            return [await self._store.insert(parts[0])]
        outcomes: list[Written | Exception] = [Written() for _ in parts]
        for statement in _statements(parts):
            await self._insert_statement(parts, statement, outcomes)
        return outcomes

    async def _insert_statement(
        self,
        parts: list[Sequence[NewAward]],
        statement: list[int],
        outcomes: list[Written | Exception],
    ) -> None:
        """Insert the awards of `parts[i]` for each i of `statement` as one; set their outcomes."""
        owners: dict[Owner, int] = {}
        merged: dict[tuple[str, str, int, str], NewAward] = {}
        for index in statement:
            for award in parts[index]:
                merged.setdefault((award.user_id, award.slug, award.level, award.award_key), award)
                owners.setdefault((award.user_id, award.slug, award.level), index)
        try:
            written = await self._store.insert(list(merged.values()))
        except Exception as exc:
            if len(statement) == 1 or is_transient(exc):
                for index in statement:
                    outcomes[index] = exc
                return
            for index in statement:
                try:
                    outcomes[index] = await self._store.insert(parts[index])
                except Exception as alone:
                    outcomes[index] = alone
            return
        for recorded in written.recorded:
            _owned(outcomes, owners, recorded).recorded.append(recorded)
        for action, ended in written.ended:
            _owned(outcomes, owners, ended).ended.append((action, ended))


def _owned(outcomes: list[Written | Exception], owners: dict[Owner, int], award: Award) -> Written:
    """The outcome of the caller that owns `award`."""
    owned = outcomes[owners[award.user_id, award.slug, award.level]]
    assert isinstance(owned, Written)
    return owned


def _statements(parts: Sequence[Sequence[NewAward]]) -> list[list[int]]:
    """The parts (by index, in order) that each statement inserts: a part goes into the first
    statement where no earlier part has an award of the same user and level under another
    award key."""
    statements: list[tuple[list[int], dict[Owner, str]]] = []
    for index, part in enumerate(parts):
        members, keys = next(((m, k) for m, k in statements if _fits(part, k)), ([], {}))
        if not members:
            statements.append((members, keys))
        members.append(index)
        for a in part:
            keys.setdefault((a.user_id, a.slug, a.level), a.award_key)
    return [members for members, _ in statements]


def _fits(part: Sequence[NewAward], keys: dict[Owner, str]) -> bool:
    """Does each award of `part` have the award key that `keys` holds for its user and level,
    if any?"""
    return all(keys.get((a.user_id, a.slug, a.level), a.award_key) == a.award_key for a in part)
