"""What a connected registry holds, and the calls in flight on it.

`disconnect()` closes the gate first, so that a call that starts afterwards gets
`NotConnectedError` before any badge runs, then waits for the calls in flight to finish before
it closes the database and Redis under them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import anyio

from .awarding import AwardFlow
from .exceptions import AbadgesError, NotConnectedError
from .notices import Publisher
from .queue import JobQueue
from .storage.base import Store

logger = logging.getLogger("abadges")

#: Seconds `disconnect()` waits for the calls in flight before it closes the connection.
DISCONNECT_TIMEOUT = 10.0

NOT_CONNECTED = (
    "abadges is not connected: await badges.connect(), or use "
    "`async with badges.lifespan():`, before touching awards."
)


@dataclasses.dataclass(eq=False)
class Connection:
    """The store, the award flow over it, the job queue (None: the inline queue) and the
    publisher of notices (None: not published) of one `connect()`, and the calls in flight on
    them."""

    store: Store
    flow: AwardFlow
    queue: JobQueue | None
    notices: Publisher | None = None
    calls: int = 0
    closing: bool = False
    closed: bool = False
    _idle: anyio.Event | None = None
    #: Set once `close()` has closed Redis and the database.
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)

    @contextlib.contextmanager
    def call(self) -> Iterator[Connection]:
        """Count a call in flight; `NotConnectedError` once `disconnect()` has begun.

        A call that the connection was closed under (it outlasted `DISCONNECT_TIMEOUT`)
        raises `NotConnectedError` too, with the driver's error as its cause."""
        if self.closing:
            raise NotConnectedError(f"disconnect() has begun; {NOT_CONNECTED}")
        self.calls += 1
        try:
            yield self
        except Exception as exc:
            if self.closed and not isinstance(exc, AbadgesError):
                raise NotConnectedError(
                    f"disconnect() closed the connection while this call ran, after waiting "
                    f"{DISCONNECT_TIMEOUT:g}s for it."
                ) from exc
            raise
        finally:
            self.calls -= 1
            if not self.calls and self._idle is not None:
                self._idle.set()

    async def close(self) -> None:
        """Refuse new calls, wait up to `DISCONNECT_TIMEOUT` for those in flight, then close
        Redis and the database: also when cancelled while waiting (at once, then)."""
        self.closing = True
        try:
            if self.calls:
                self._idle = anyio.Event()
                with anyio.move_on_after(DISCONNECT_TIMEOUT) as waited:
                    await self._idle.wait()
                if waited.cancelled_caught:
                    logger.warning(
                        "disconnect(): %d call(s) still running after %gs; closing the "
                        "connection under them (they raise NotConnectedError).",
                        self.calls,
                        DISCONNECT_TIMEOUT,
                    )
        finally:
            self.closed = True
            with anyio.CancelScope(shield=True):
                try:
                    if self.queue is not None:
                        await self.queue.close()
                    if self.notices is not None:
                        await self.notices.close()
                finally:
                    await self.store.disconnect()
