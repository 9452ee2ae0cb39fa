"""Settings: `ABADGES_*` environment variables, overridden by `BadgeRegistry.configure()`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from .users import UserIdFunction, default_user_id

__all__ = ["Settings"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a `BadgeRegistry` connects to and how it identifies users."""

    #: Any `databases` URL: `sqlite+aiosqlite:///...`, `postgresql+asyncpg://...`,
    #: `mysql+asyncmy://...`. Environment: `ABADGES_DATABASE_URL`.
    database_url: str = "sqlite+aiosqlite:///abadges.sqlite3"
    #: Turns the `user` of an event into the identity stored with its awards.
    user_id: UserIdFunction = default_user_id

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Defaults, overridden by the `ABADGES_*` variables set in `environ`."""
        settings = cls()
        if "ABADGES_DATABASE_URL" in environ:
            settings = dataclasses.replace(settings, database_url=environ["ABADGES_DATABASE_URL"])
        return settings
