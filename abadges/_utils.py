from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Awaitable
from types import ModuleType
from typing import Any, TypeVar

from .exceptions import ConfigurationError

T = TypeVar("T")


async def maybe_await(value: T | Awaitable[T]) -> T:
    """Await `value` if it is awaitable: user hooks may be plain functions or coroutines."""
    if inspect.isawaitable(value):
        return await value
    return value


def import_from_string(import_str: str, setting: str) -> Any:
    """The object that `"pkg.mod:attr"` names; `ConfigurationError` naming `setting` if none."""
    module_name, _, attribute = import_str.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"{setting} must look like 'pkg.module:function'; got {import_str!r}."
        )
    module = import_module(module_name, setting)
    try:
        return functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        raise ConfigurationError(
            f"{setting} is {import_str!r}, but module {module_name!r} has no {attribute!r}."
        ) from None


def import_module(module_name: str, setting: str) -> ModuleType:
    """Import `module_name`; `ConfigurationError` naming `setting` if it cannot be found."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # The module exists; something it imports does not.
        raise ConfigurationError(
            f"{setting} names module {module_name!r}, which cannot be imported: {exc}."
        ) from exc


def storable(text: str) -> bool:
    """Can every database keep `text` as it is? Not with a NUL (PostgreSQL refuses it), nor with
    a lone surrogate, which no driver can encode as UTF-8 (JSON's "\\ud800" decodes to one)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shorten(value: object, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters: messages quote values, never whole payloads."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


#: Query parameters that carry a secret in database and Redis URLs, prefixed ones too
#: (`ssl_password`, `sentinel_password`).
SECRET_PARAMETERS = re.compile(
    r"(?i)([?&](?:\w*_)?(?:password|passwd|pwd|pass|secret|token)=)[^&#]*"
)


def obscure(url: object) -> str:
    """`url` for messages and logs: its password, and any password in its query, replaced by
    `***`. Whatever stands between the scheme and the last `@` is treated as a secret, so a
    malformed URL ("redis:/:pw@host") does not show it either; a well-formed user name stays.
    """
    text = SECRET_PARAMETERS.sub(r"\1***", str(url))
    if "@" not in text:
        return text
    head, _, host = text.rpartition("@")
    scheme, separator, userinfo = head.partition("://")
    if not separator:
        scheme, separator, userinfo = head.partition(":")
    if not separator:
        return f"***@{host}"
    well_formed = not any(char in userinfo for char in "/@")
    user, colon, _ = userinfo.partition(":")
    if well_formed and not colon:
        return text  # A user name without a password.
    return f"{scheme}{separator}{user if well_formed else ''}:***@{host}"


#: redis-py prefixes the error of a pipelined command with the command and its arguments: the
#: job's payload, with the user's frozen state.
PIPELINE_ERROR = re.compile(
    r"^Command # \d+ \(.*\) of pipeline caused error: \((['\"])(?P<error>.*)\1,?\)$", re.DOTALL
)


def describe(exc: BaseException) -> str:
    """`Type: message` of an error for a message of abadges': without its full stop, without
    the command text redis-py puts in front of a pipelined command's error, and at most 200
    characters, so never a job's payload."""
    message = str(exc)
    if match := PIPELINE_ERROR.match(message):
        message = match["error"]
    message = message.rstrip(".")
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= 200 else f"{text[:197]}..."
