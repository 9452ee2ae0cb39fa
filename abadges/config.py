"""Settings: `ABADGES_*` environment variables, overridden by `BadgeRegistry.configure()`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from ._utils import obscure
from .exceptions import ConfigurationError
from .openbadges.settings import OpenBadgesSettings
from .redis_url import redis_options
from .users import UserIdFunction, default_user_id

__all__ = ["Settings"]

#: Turns a stored identity back into a user for deferred badges; plain or async.
UserLoader = Callable[[str], Awaitable[Any] | Any]

#: Where deferred badges go: "redis" (arq jobs for the worker) or "inline" (in-process).
QUEUES = ("redis", "inline")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

#: Setting name -> environment variable, for the settings that can come from the environment.
ENVIRONMENT = {
    "database_url": "ABADGES_DATABASE_URL",
    "redis_url": "ABADGES_REDIS_URL",
    "queue": "ABADGES_QUEUE",
    "queue_name": "ABADGES_QUEUE_NAME",
    "badges": "ABADGES_BADGES",
    "user_loader": "ABADGES_USER_LOADER",
    "notices": "ABADGES_NOTICES",
    "notices_stream": "ABADGES_NOTICES_STREAM",
    "notices_maxlen": "ABADGES_NOTICES_MAXLEN",
}
#: How `ABADGES_NOTICES` may say yes or no.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """What a `BadgeRegistry` connects to, and how it identifies and loads users."""

    database_url: str = "sqlite+aiosqlite:///abadges.sqlite3"
    """Any `databases` URL: `sqlite+aiosqlite:///...`, `postgresql+asyncpg://...`,
    `mysql+asyncmy://...`. Environment: `ABADGES_DATABASE_URL`.
    """

    redis_url: str = "redis://localhost:6379"
    """The Redis that carries deferred badges to the worker: `redis://`, `rediss://` or `unix://`.
    Environment: `ABADGES_REDIS_URL`.
    """

    queue: Literal["redis", "inline"] = "redis"
    """Where deferred badges go. "redis": arq jobs for `arq abadges.worker.Settings`. "inline":
    the calling process, through the same JSON codec (for tests and development). Environment:
    `ABADGES_QUEUE`.
    """

    queue_name: str = "abadges:queue"
    """The arq queue (a Redis key) that app and worker share. Environment: `ABADGES_QUEUE_NAME`."""

    badges: tuple[str, ...] = ()
    """Modules the worker imports at start to register its badges. Environment: `ABADGES_BADGES`,
    comma-separated.
    """

    user_id: UserIdFunction = default_user_id
    """Turns the `user` of an event into the identity stored with its awards."""

    user_loader: UserLoader | str | None = None
    """Turns a stored identity back into the `user` a deferred badge's `award()` receives: a
    function, or its import string `"pkg.mod:func"`. Without one, `award()` gets a `UserRef`.
    Environment: `ABADGES_USER_LOADER`.
    """

    notices: bool | None = None
    """Whether every award recorded and every award that stops being held is published to the
    Redis stream `notices_stream`, for `BadgeRegistry.subscribe()`. None (the default): when
    `queue` is "redis", the Redis the workers use anyway; True: always (`redis_url`); False:
    never. The unseen list is kept either way. Environment: `ABADGES_NOTICES` (true/false).
    """

    notices_stream: str = "abadges:changes"
    """The Redis stream the notices go to. Environment: `ABADGES_NOTICES_STREAM`."""

    notices_maxlen: int = 10000
    """About how many notices the stream keeps (`XADD ... MAXLEN ~`): the oldest are trimmed.
    Environment: `ABADGES_NOTICES_MAXLEN`."""

    openbadges: OpenBadgesSettings | None = None
    """How awards are issued as Open Badges 3.0 credentials: an
    `abadges.openbadges.OpenBadgesSettings` (see the Open Badges page of the docs). None (the
    default): they are not."""

    def __post_init__(self) -> None:
        if self.queue not in QUEUES:
            raise ConfigurationError(f"queue must be one of {list(QUEUES)}; got {self.queue!r}.")
        if not isinstance(self.redis_url, str) or not self.redis_url.startswith(REDIS_SCHEMES):
            raise ConfigurationError(
                f"redis_url must start with one of {list(REDIS_SCHEMES)}; "
                f"got {obscure(self.redis_url)!r}."
            )
        # Read as the app and the worker will: an option one of them would drop fails here.
        redis_options(self.redis_url)
        if not isinstance(self.queue_name, str) or not self.queue_name:
            raise ConfigurationError(
                f"queue_name must be a non-empty str; got {self.queue_name!r}."
            )
        badges = self.badges
        if isinstance(badges, str):
            badges = tuple(badges.split(","))
        if not all(isinstance(module, str) for module in badges):
            raise ConfigurationError(f"badges must be module names; got {self.badges!r}.")
        object.__setattr__(self, "badges", tuple(m.strip() for m in badges if m.strip()))
        self._check_notices()
        if self.openbadges is not None and not isinstance(self.openbadges, OpenBadgesSettings):
            raise ConfigurationError(
                "openbadges must be None or an abadges.openbadges.OpenBadgesSettings; got "
                f"{type(self.openbadges).__name__}."
            )

    @property
    def publishes_notices(self) -> bool:
        """Whether awards are published to the notices stream (see `notices`)."""
        return self.queue == "redis" if self.notices is None else self.notices

    def _check_notices(self) -> None:
        notices: object = self.notices
        if isinstance(notices, str):  # From the environment.
            word = notices.strip().lower()
            notices = True if word in TRUE_WORDS else False if word in FALSE_WORDS else notices
        if notices is not None and not isinstance(notices, bool):
            raise ConfigurationError(
                f"notices must be None, True or False (ABADGES_NOTICES: one of "
                f"{list(TRUE_WORDS + FALSE_WORDS)}); got {notices!r}."
            )
        object.__setattr__(self, "notices", notices)
        if not isinstance(self.notices_stream, str) or not self.notices_stream:
            raise ConfigurationError(
                f"notices_stream must be a non-empty str; got {self.notices_stream!r}."
            )
        maxlen: object = self.notices_maxlen
        if isinstance(maxlen, str) and maxlen.strip().isdigit():  # From the environment.
            maxlen = int(maxlen)
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise ConfigurationError(
                f"notices_maxlen must be a whole number above 0; got {self.notices_maxlen!r}."
            )
        object.__setattr__(self, "notices_maxlen", maxlen)

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: never with the passwords of their URLs.
        fields = ", ".join(
            f"{field.name}={obscure(value)!r}"
            if field.name in ("database_url", "redis_url")
            else f"{field.name}={value!r}"
            for field in dataclasses.fields(self)
            for value in [getattr(self, field.name)]
        )
        return f"Settings({fields})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Defaults, overridden by the `ABADGES_*` variables set in `environ`."""
        values: dict[str, Any] = {
            name: environ[variable] for name, variable in ENVIRONMENT.items() if variable in environ
        }
        try:
            return cls(**values)
        except ConfigurationError as exc:
            exc.add_note(f"The ABADGES_* variables set: {sorted(ENVIRONMENT[n] for n in values)}.")
            raise
