"""Types shared by the tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

#: The `stored_rows` fixture: reads (user_id, slug, level) of every stored award, in id order.
Rows = Callable[[], Awaitable[list[tuple[str, str, int]]]]
