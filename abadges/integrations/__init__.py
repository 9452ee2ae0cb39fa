"""Connect and disconnect abadges with a web framework's own lifecycle.

| framework | glue |
| --- | --- |
| Starlette, FastAPI | `Starlette(lifespan=abadges.integrations.starlette.lifespan())` |
| Quart | `abadges.integrations.quart.init_app(app)` (`before_serving` and `after_serving`) |
| aiohttp | `abadges.integrations.aiohttp.setup(app)` (a `cleanup_ctx` entry) |

Each takes the registry to serve, `abadges.badges` by default, and imports nothing from the
framework at run time.
"""
