"""Quart: abadges connected while the app serves.

```python
from abadges.integrations.quart import init_app

app = Quart(__name__)
init_app(app)
```
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from .. import badges
from ..registry import BadgeRegistry

if TYPE_CHECKING:
    from quart import Quart

__all__ = ["init_app"]


def init_app(app: Quart, registry: BadgeRegistry = badges) -> None:
    """Register a `while_serving` hook on `app` that connects `registry` before the first request
    and disconnects it after the last."""

    @app.while_serving
    async def abadges_lifespan() -> AsyncGenerator[None, None]:
        async with registry.lifespan():
            yield
