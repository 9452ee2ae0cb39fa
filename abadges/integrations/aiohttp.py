"""aiohttp: abadges connected for the life of the `web.Application`.

```python
from abadges.integrations.aiohttp import setup

app = web.Application()
setup(app)
```
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .. import badges
from ..registry import BadgeRegistry

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["setup"]


def setup(app: web.Application, registry: BadgeRegistry = badges) -> None:
    """Append a `cleanup_ctx` entry to `app` that connects `registry` at startup and disconnects
    it at cleanup."""

    async def abadges_context(app: web.Application) -> AsyncIterator[None]:
        async with registry.lifespan():
            yield

    app.cleanup_ctx.append(abadges_context)
