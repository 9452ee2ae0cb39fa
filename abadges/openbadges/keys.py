"""The signing key and the JWK Set: keys loaded from PEM or JWK, named by their thumbprint."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet, OKPKey, RSAKey

from .._utils import describe
from ..exceptions import ConfigurationError
from .settings import KeySource, OpenBadgesSettings

#: The smallest RSA key RS256 is given (NIST SP 800-131A).
MIN_RSA_BITS = 2048
KEY_TYPES: dict[str, type[RSAKey] | type[OKPKey]] = {"RS256": RSAKey, "EdDSA": OKPKey}


@dataclasses.dataclass(frozen=True)
class SigningKeys:
    """The key that signs, and the JWK Set of every public key a credential may name."""

    algorithm: str
    key: RSAKey | OKPKey
    kid: str
    jwks: dict[str, Any]

    @classmethod
    def load(cls, settings: OpenBadgesSettings) -> SigningKeys:
        """The keys of `settings`; `ConfigurationError` naming the key at fault."""
        algorithm = settings.algorithm
        key = load_key(settings.signing_key, algorithm, "signing_key")
        if not key.is_private:
            raise ConfigurationError(
                "OpenBadgesSettings signing_key is a public key; credentials are signed with "
                "the private key."
            )
        keys = [key]
        for number, source in enumerate(settings.previous_keys):
            keys.append(load_key(source, algorithm, f"previous_keys[{number}]"))
        public = [public_jwk(each, algorithm) for each in keys]
        kids = [jwk["kid"] for jwk in public]
        duplicate = next((kid for kid in kids if kids.count(kid) > 1), None)
        if duplicate is not None:
            raise ConfigurationError(
                f"OpenBadgesSettings names the key {duplicate!r} twice (signing_key and "
                "previous_keys, or twice in previous_keys): list each key once."
            )
        return cls(algorithm, key, kids[0], {"keys": public})


def load_key(source: KeySource, algorithm: str, name: str) -> RSAKey | OKPKey:
    """A key of the type `algorithm` signs with, from PEM text or bytes, a path, or a JWK."""
    kind = KEY_TYPES[algorithm]
    what = f"OpenBadgesSettings {name}"
    data: str | bytes | dict[str, Any]
    if isinstance(source, Mapping):
        data = dict(source)
    elif isinstance(source, bytes):
        data = source
    elif isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        data = source
    elif isinstance(source, str | os.PathLike):
        path = pathlib.Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"{what}: cannot read the key file {str(path)!r} ({describe(exc)}); give PEM "
                "text, a path to a PEM file, or a JWK dict."
            ) from exc
    else:
        raise ConfigurationError(
            f"{what} must be PEM text or bytes, a path to a PEM file, or a JWK dict; got "
            f"{type(source).__name__}."
        )
    try:
        with warnings.catch_warnings():
            # A short RSA key is refused below, in words of its own.
            warnings.filterwarnings("ignore", "Key size should be", SecurityWarning)
            key: RSAKey | OKPKey = kind.import_key(data)
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{what} is not an {'RSA' if kind is RSAKey else 'Ed25519'} key, which {algorithm} "
            f"signs with ({describe(exc)})."
        ) from exc
    if isinstance(key, RSAKey):
        bits = key.raw_value.key_size
        if bits < MIN_RSA_BITS:
            raise ConfigurationError(
                f"{what} is an RSA key of {bits} bits; RS256 needs {MIN_RSA_BITS} or more."
            )
    elif key.as_dict(private=False)["crv"] != "Ed25519":
        raise ConfigurationError(
            f"{what} is an {key.as_dict(private=False)['crv']} key; EdDSA signs with Ed25519."
        )
    return key


def public_jwk(key: RSAKey | OKPKey, algorithm: str) -> dict[str, Any]:
    """The public JWK of `key`, with its `kid` (its RFC 7638 thumbprint, unless the JWK it was
    loaded from named one), `alg` and `use`."""
    jwk = key.as_dict(private=False)
    jwk.setdefault("kid", key.thumbprint())
    return {**jwk, "alg": algorithm, "use": "sig"}


def key_set(jwks: Mapping[str, Any]) -> KeySet:
    """The joserfc `KeySet` of a JWK Set; `ValueError` when it is not one."""
    try:
        return KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a JWK Set of public keys ({describe(exc)})") from exc


@contextlib.contextmanager
def allowing_eddsa() -> Iterator[None]:
    """Sign or verify with "EdDSA" without joserfc's warning: RFC 9864 names Ed25519's
    algorithm "Ed25519" from now on, but "EdDSA" is what Open Badges 3.0 and today's verifiers
    know."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
        yield
