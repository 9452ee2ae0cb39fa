"""Starlette and FastAPI: abadges connected for the life of the app.

```python
from abadges.integrations.starlette import lifespan

app = Starlette(routes=routes, lifespan=lifespan())  # or FastAPI(lifespan=lifespan())
```

An app with a lifespan of its own enters `badges.lifespan()` inside it instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .. import badges
from ..registry import BadgeRegistry

__all__ = ["lifespan"]


def lifespan(
    registry: BadgeRegistry = badges,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan for `Starlette(lifespan=...)` or `FastAPI(lifespan=...)`: connects `registry`
    at startup and disconnects it at shutdown."""

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        async with registry.lifespan():
            yield

    return app_lifespan
