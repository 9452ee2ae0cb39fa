"""Credentials as VC-JWTs (Open Badges 3.0, section 8.2): the credential's own members are the
payload, with the JWT's registered claims beside them; `kid` names the key in the header."""

from __future__ import annotations

import datetime
from typing import Any

from joserfc import jwt

from .keys import SigningKeys, allowing_eddsa

#: The JWT claims that restate members of the credential; `verify()` checks they agree.
REGISTERED = ("iss", "jti", "sub", "nbf", "exp")


def timestamp(text: str) -> int:
    """The seconds since the epoch of a credential's date ("2024-05-01T12:00:00Z")."""
    return int(datetime.datetime.fromisoformat(text).timestamp())


def claims_of(credential: dict[str, Any]) -> dict[str, Any]:
    """The JWT payload of `credential`: its members, and `iss` (the issuer's id), `jti` (its
    id), `sub` (the subject's id, when it has one), `nbf` and `exp` (its dates)."""
    issuer = credential["issuer"]
    claims = {**credential, "iss": issuer if isinstance(issuer, str) else issuer["id"]}
    claims["jti"] = credential["id"]
    subject = credential["credentialSubject"].get("id")
    if subject is not None:
        claims["sub"] = subject
    claims["nbf"] = timestamp(credential["validFrom"])
    if "validUntil" in credential:
        claims["exp"] = timestamp(credential["validUntil"])
    return claims


def sign(credential: dict[str, Any], keys: SigningKeys) -> str:
    """`credential` as a compact VC-JWT signed with the signing key. The header names the key
    twice, as Open Badges 3.0 verifiers look for it: `kid`, its id in the issuer's JWK Set, and
    `jwk`, the public key itself (which a verifier still checks against that set)."""
    header = {"alg": keys.algorithm, "typ": "JWT", "kid": keys.kid, "jwk": keys.jwks["keys"][0]}
    with allowing_eddsa():
        return jwt.encode(header, claims_of(credential), keys.key, algorithms=[keys.algorithm])
