"""How a user object becomes the identity stored with its awards."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

from ._utils import storable
from .exceptions import InvalidStateError

#: Longest identity the awards table can hold.
MAX_USER_ID_LENGTH = 255

UserIdFunction = Callable[[Any], object]
IDENTITY_TYPES = (str, int, uuid.UUID)


@dataclasses.dataclass(frozen=True)
class UserRef:
    """A user known only by its identity, as stored with its awards."""

    id: str


def default_user_id(user: Any) -> object:
    """`user.id` when the user has one, else the user itself (a str, int or UUID)."""
    return getattr(user, "id", user)


def identify(user: Any, user_id: UserIdFunction) -> str:
    """The identity of `user` as stored: `user_id(user)` as a string.

    Raises `InvalidStateError` when that is not a non-empty str, int or UUID of at most
    `MAX_USER_ID_LENGTH` characters.
    """
    value = user_id(user)
    if isinstance(value, bool) or not isinstance(value, IDENTITY_TYPES):
        raise InvalidStateError(
            f"The user {user!r} has no usable identity: user_id() gave {value!r}; "
            "expected a str, int or UUID. Configure user_id= to say how to identify users."
        )
    try:
        identity = str(value)
    except ValueError:  # An int of over 4,300 digits, which Python refuses to print.
        raise InvalidStateError(
            f"The user identity is an int of over 4,300 digits; an identity has 1 to "
            f"{MAX_USER_ID_LENGTH} characters."
        ) from None
    if not identity or len(identity) > MAX_USER_ID_LENGTH or not storable(identity):
        raise InvalidStateError(
            f"The user identity {identity[:80]!r} is not storable: it must have 1 to "
            f"{MAX_USER_ID_LENGTH} characters, no NUL and no lone surrogate."
        )
    return identity


def identify_known(user: Any, user_id: UserIdFunction) -> str:
    """Like `identify`, but a str, int or UUID is taken as the identity itself, as queries
    usually get it from a URL."""
    return identify(user, default_user_id if isinstance(user, IDENTITY_TYPES) else user_id)
