"""What `badges.configure(openbadges=...)` takes: the issuer's profile and how to sign."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from .._utils import shorten
from ..exceptions import ConfigurationError

__all__ = ["ALGORITHMS", "Issuer", "KeySource", "OpenBadgesSettings", "RecipientFunction"]

#: The signing algorithms: RS256, which Open Badges 3.0 requires every verifier to accept, and
#: EdDSA (Ed25519).
ALGORITHMS = ("RS256", "EdDSA")
#: A key as the settings take it: PEM text or bytes, a path to a PEM file, or a JWK dict.
KeySource = str | bytes | os.PathLike[str] | Mapping[str, Any]
#: Gives the recipient of a user's credentials: an email address (published hashed and
#: salted), or a URL or a DID (published as it is); plain or async.
RecipientFunction = Callable[[str], Awaitable[str] | str]
#: An absolute URI: a scheme, a colon, and something after it ("https://...", "did:web:...").
URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Issuer:
    """The issuer's `Profile`: `id` is its URI (a URL, where its profile is served, or a DID),
    `name` what a wallet shows; `url` its home page, `email` and `image` (a URL) optional."""

    id: str
    name: str
    url: str | None = None
    email: str | None = None
    image: str | None = None

    def __post_init__(self) -> None:
        _check_uri("Issuer id", self.id)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError(
                f"Issuer name must be a non-empty str; got {shorten(self.name)}."
            )
        for name in ("url", "image"):
            value = getattr(self, name)
            if value is not None:
                _check_uri(f"Issuer {name}", value)
        if self.email is not None and (not isinstance(self.email, str) or "@" not in self.email):
            raise ConfigurationError(
                f"Issuer email must be None or an email address; got {shorten(self.email)}."
            )


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class OpenBadgesSettings:
    """How abadges issues Open Badges 3.0 credentials (see docs/openbadges.md).

    - `issuer`: the `Issuer` whose profile every credential names;
    - `base_url`: the public URL under which the app serves the achievements
      (`{base_url}/achievements/{slug}/{level}`), the credentials
      (`{base_url}/credentials/{award_id}`), the status list (`{base_url}/status`) and the
      keys (`{base_url}/jwks.json`);
    - `signing_key`: the private key credentials are signed with: PEM text or bytes, a path to
      a PEM file, or a JWK dict;
    - `algorithm`: "RS256" (an RSA key of 2048 bits or more) or "EdDSA" (an Ed25519 key);
    - `recipient`: `recipient(user_id)`, plain or async, gives the subject of a user's
      credentials: an email address, published hashed and salted, or a URL or a DID;
    - `previous_keys`: the keys signed with before, public or private, kept in the JWK Set so
      that the credentials they signed still verify after a rotation.
    """

    issuer: Issuer
    base_url: str
    signing_key: KeySource
    recipient: RecipientFunction
    algorithm: Literal["RS256", "EdDSA"] = "RS256"
    previous_keys: Sequence[KeySource] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.issuer, Issuer):
            raise ConfigurationError(
                f"OpenBadgesSettings issuer must be an abadges.openbadges.Issuer; got "
                f"{shorten(self.issuer)}."
            )
        if not isinstance(self.base_url, str) or not re.fullmatch(
            r"https?://[^\s/?#]+(/[^\s?#]*)?", self.base_url
        ):
            raise ConfigurationError(
                "OpenBadgesSettings base_url must be an http(s) URL without a query, such as "
                f"'https://example.com/openbadges'; got {shorten(self.base_url)}."
            )
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"OpenBadgesSettings algorithm must be one of {list(ALGORITHMS)}; got "
                f"{shorten(self.algorithm)}."
            )
        if not callable(self.recipient):
            raise ConfigurationError(
                "OpenBadgesSettings recipient must be a function of a user id that gives an "
                f"email address, a URL or a DID; got {shorten(self.recipient)}."
            )
        if isinstance(self.previous_keys, str | bytes | Mapping) or not isinstance(
            self.previous_keys, Sequence
        ):
            raise ConfigurationError(
                "OpenBadgesSettings previous_keys must be a list of keys; got "
                f"{shorten(self.previous_keys)}."
            )

    def __repr__(self) -> str:
        # The signing key stays out of logs and tracebacks.
        return (
            f"OpenBadgesSettings(issuer={self.issuer!r}, base_url={self.base_url!r}, "
            f"algorithm={self.algorithm!r}, previous_keys={len(self.previous_keys)})"
        )


def _check_uri(name: str, value: object) -> None:
    if not isinstance(value, str) or not URI.fullmatch(value):
        raise ConfigurationError(
            f"{name} must be an absolute URI, such as 'https://example.com' or "
            f"'did:web:example.com'; got {shorten(value)}."
        )
