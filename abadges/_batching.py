"""Group commit: the calls that arrive while one is running wait, then run as one.

A call that finds nothing running runs at once, alone, so one caller waits no longer than it
would without the batcher. Calls that arrive meanwhile join the next batch, which runs when
the running one ends, in one call of `run` that does the work of all of them: one statement
and one commit for the inserts of concurrent events, one Redis round trip for their notices.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio

Item = TypeVar("Item")
Result = TypeVar("Result")
#: `run(items)` gives each item's result, or the exception that is its caller's, in order.
Run = Callable[[list[Item]], Awaitable[Sequence[Result | Exception]]]


class _Batch(Generic[Item, Result]):
    """The calls waiting for the same run: the first of them (the leader) makes it."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.outcomes: Sequence[Result | BaseException] = ()
        self.turn = anyio.Event()  # The batch before has ended: the leader runs this one.
        self.done = anyio.Event()


class Batcher(Generic[Item, Result]):
    """Runs `run` for one item at a time, or for all the items that queued behind a run.

    At most one run is in flight. Waiting is shielded from cancellation: a leader cancelled
    while its batch waits would leave the others waiting forever. The callers are shielded
    anyway (`AwardFlow.record()`), and the wait lasts only until the run in flight ends.
    """

    def __init__(self, run: Run[Item, Result]) -> None:
        self._run = run
        self._running = False
        self._next: _Batch[Item, Result] | None = None

    async def __call__(self, item: Item) -> Result:
        outcome: Result | BaseException
        if not self._running:
            self._running = True
            try:
                outcome = (await self._run([item]))[0]
            finally:
                self._hand_on()
        else:
            outcome = await self._join(item)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _join(self, item: Item) -> Result | BaseException:
        batch = self._next
        if batch is None:
            batch = self._next = _Batch()
        batch.items.append(item)
        index = len(batch.items) - 1
        with anyio.CancelScope(shield=True):
            if index:
                await batch.done.wait()
            else:
                await batch.turn.wait()
                self._next = None  # Calls from now on queue for the batch after this one.
                try:
                    batch.outcomes = await self._run(batch.items)
                except BaseException as exc:
                    batch.outcomes = [exc] * len(batch.items)
                finally:
                    batch.done.set()
                    self._hand_on()
        return batch.outcomes[index]

    def _hand_on(self) -> None:
        """The run in flight has ended: start the next batch, if any waits."""
        if self._next is None:
            self._running = False
        else:
            self._next.turn.set()
