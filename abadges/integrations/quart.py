"""Quart: abadges connected while the app serves.

```python
from abadges.integrations.quart import init_app

app = Quart(__name__)
init_app(app)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import badges
from ..registry import BadgeRegistry

if TYPE_CHECKING:
    from quart import Quart

__all__ = ["init_app"]


def init_app(app: Quart, registry: BadgeRegistry = badges) -> None:
    """Connect `registry` before `app` serves its first request (`before_serving`) and
    disconnect it after the last (`after_serving`)."""
    # Not `while_serving`: Quart makes that generator once, at registration, so an app that
    # serves a second time (another test, say) would find it spent.
    app.before_serving(registry.connect)
    app.after_serving(registry.disconnect)
