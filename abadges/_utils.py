from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def maybe_await(value: T | Awaitable[T]) -> T:
    """Await `value` if it is awaitable: user hooks may be plain functions or coroutines."""
    if inspect.isawaitable(value):
        return await value
    return value
