"""The Redis URL (`ABADGES_REDIS_URL`), read once for both sides of the queue: the app's
redis-py client and the worker's arq `RedisSettings` come from the same parse.

redis-py's own parser reads it (`parse_url`, the one `Redis.from_url()` uses): it
percent-decodes the user name, the password and the socket path, and takes options such as
`password`, `db` or `ssl_ca_certs` from the query. arq's `RedisSettings.from_dsn()` does
neither, so a worker built with it logs in with the still-encoded password, or none, or
ignores the TLS options the app honours. Options that arq's `RedisSettings` cannot carry to
the worker are refused, naming the option, instead of being dropped on one side.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis.asyncio
from arq.connections import RedisSettings
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from ._utils import obscure
from .exceptions import ConfigurationError

#: The query options both sides take: each is an argument of `redis.asyncio.Redis` and, under
#: the name given here, a field of arq's `RedisSettings`.
OPTIONS = {
    "db": "database",
    "username": "username",
    "password": "password",
    "socket_connect_timeout": "conn_timeout",
    "max_connections": "max_connections",
    "retry_on_timeout": "retry_on_timeout",
    "ssl_keyfile": "ssl_keyfile",
    "ssl_certfile": "ssl_certfile",
    "ssl_cert_reqs": "ssl_cert_reqs",
    "ssl_ca_certs": "ssl_ca_certs",
    "ssl_ca_data": "ssl_ca_data",
    "ssl_check_hostname": "ssl_check_hostname",
}
#: What the URL itself gives besides its query, by `redis.asyncio.Redis` argument.
LOCATION = {"host": "host", "port": "port", "unix_socket_path": "unix_socket_path", "ssl": "ssl"}
CERT_REQS = ("none", "optional", "required")
#: A `redis://` path is a database number, or nothing.
DATABASE_PATH = re.compile(r"(/\d*)?/?")


def redis_options(url: str) -> dict[str, Any]:
    """The `redis.asyncio.Redis` arguments for `url`, as redis-py's `from_url()` reads it;
    `ConfigurationError` for an option the worker could not take too, or a malformed URL."""
    try:
        parts = urlsplit(url)
        parsed: dict[str, Any] = dict(parse_url(url))
    except ValueError as exc:
        # Never the message of urllib's errors: a password with an unencoded "#" or "/" ends
        # the host part early, and the error quotes what follows as the port.
        reason = (
            str(exc).rstrip(".")
            if str(exc).startswith("Invalid value for")
            else "it is malformed. Percent-encode the user name and the password (a '#', '/', "
            "'?', '@' or '[' in them must be)"
        )
        raise ConfigurationError(f"redis_url {obscure(url)!r} cannot be read: {reason}.") from None
    for name in parse_qs(parts.query):
        if name not in OPTIONS:
            raise ConfigurationError(
                f"redis_url has option {name!r}, which the worker cannot take: it connects with "
                f"arq's RedisSettings, which has no such setting. Remove {name!r} from "
                f"{obscure(url)!r}; the options both the app and the worker take are "
                f"{sorted(OPTIONS)}."
            )
    connection_class = parsed.pop("connection_class", None)
    options: dict[str, Any] = {}
    if connection_class is UnixDomainSocketConnection:
        if "path" not in parsed:
            raise ConfigurationError(
                f"redis_url {obscure(url)!r} names no socket: write unix:///path/to/redis.sock."
            )
        options["unix_socket_path"] = parsed.pop("path")
    else:
        if not DATABASE_PATH.fullmatch(parts.path):
            raise ConfigurationError(
                f"redis_url {obscure(url)!r} has a path that is not a database number: give "
                "the database as redis://host:6379/1 or ?db=1, and percent-encode the user "
                "name and the password (a '/' in them starts the path)."
            )
        for name in ("host", "port"):
            if name in parsed:
                options[name] = parsed.pop(name)
        options["ssl"] = connection_class is SSLConnection
    tls = sorted(name for name in parsed if name.startswith("ssl_"))
    if tls and not options.get("ssl"):
        raise ConfigurationError(
            f"redis_url has TLS option {tls[0]!r}, but {obscure(url)!r} is not a rediss:// "
            "URL: use rediss:// to connect with TLS, or remove the option."
        )
    if parsed.get("ssl_cert_reqs", "required") not in CERT_REQS:
        raise ConfigurationError(
            f"redis_url option ssl_cert_reqs must be one of {list(CERT_REQS)}; got "
            f"{parsed['ssl_cert_reqs']!r}."
        )
    return {**options, **parsed}


def redis_client(url: str, **defaults: Any) -> redis.asyncio.Redis:
    """A redis-py client for `url`, which connects on its first command. `defaults` (such as
    timeouts) are `redis.asyncio.Redis` arguments; where the URL gives one too, the URL wins,
    as with `Redis.from_url()`."""
    return redis.asyncio.Redis(**{**defaults, **redis_options(url)})


def arq_settings(url: str) -> RedisSettings:
    """arq's `RedisSettings` for `url`: the same connection as `redis_client(url)`."""
    fields = {**LOCATION, **OPTIONS}
    return RedisSettings(**{fields[name]: value for name, value in redis_options(url).items()})
