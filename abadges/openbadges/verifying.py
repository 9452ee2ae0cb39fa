"""`verify()`: a credential's signature, its dates and its revocation status, checked offline
from the issuer's published JWK Set and status list."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jws import JWSRegistry

from .._utils import describe, shorten
from ..exceptions import CredentialError
from .keys import allowing_eddsa, key_set
from .settings import ALGORITHMS
from .signing import REGISTERED, claims_of
from .status import MAX_BYTES, is_set

#: Seconds of difference between two clocks that dates are allowed.
LEEWAY = 60


def _registry() -> JWSRegistry:
    """joserfc's checks, with room for a header that carries an RSA key of up to 4096 bits
    (`jwk`) and for a status list of up to `MAX_BYTES` (its gzip inside base64 twice)."""
    registry = JWSRegistry(algorithms=list(ALGORITHMS))
    registry.max_header_length = 4096
    registry.max_payload_length = 4 * MAX_BYTES
    return registry


REGISTRY = _registry()


def verify(
    token: str,
    jwks: Mapping[str, Any],
    status_list: str | None = None,
    *,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The credential of the VC-JWT `token` when it holds, else `CredentialError` saying what
    failed: its signature under the key its `kid` names in `jwks` (a JWK Set, as the issuer
    serves it), its dates (`validFrom`, `validUntil`, at `now`, by default the current time),
    and, when `status_list` is given (the issuer's status list, the VC-JWT it serves, which is
    checked against `jwks` in turn), that it is not revoked. Without `status_list`, revocation
    is not checked."""
    at = datetime.datetime.now(datetime.UTC) if now is None else now
    credential = _verified(token, jwks, "credential")
    name = f"Credential {shorten(credential.get('id'))}"
    _check_dates(name, credential, at)
    if status_list is not None:
        _check_status(name, credential, _verified(status_list, jwks, "status list"), at)
    return credential


def _verified(token: str, jwks: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The credential of `token`, whose signature holds, whose registered claims agree with its
    members."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise CredentialError(f"The {what} is not a compact JWT; got {shorten(token)}.")
    try:
        keys = key_set(jwks)
    except ValueError as exc:
        raise CredentialError(f"Cannot check the {what}: jwks is {exc}.") from None
    try:
        with allowing_eddsa():
            decoded = jwt.decode(token, keys, registry=REGISTRY)
    except InvalidKeyIdError:
        kids = [key.kid for key in keys.keys]
        raise CredentialError(
            f"The {what} names a key that the JWK Set does not hold (it holds {kids}): "
            "it was signed by someone else, or with a key the issuer no longer publishes."
        ) from None
    except BadSignatureError:
        raise CredentialError(
            f"The {what}'s signature does not verify: it was changed after it was signed, or "
            "signed with another key."
        ) from None
    except (JoseError, ValueError) as exc:
        raise CredentialError(f"The {what} is not a valid JWT ({describe(exc)}).") from None
    claims = dict(decoded.claims)
    credential = {name: value for name, value in claims.items() if name not in REGISTERED}
    try:
        expected = claims_of(credential)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CredentialError(
            f"The {what}'s payload is not a verifiable credential ({describe(exc)})."
        ) from None
    for name in REGISTERED:
        if claims.get(name) != expected.get(name):
            raise CredentialError(
                f"The {what}'s JWT claim {name!r} is {shorten(claims.get(name))}, but its "
                f"credential gives {shorten(expected.get(name))}."
            )
    return credential


def _check_dates(name: str, credential: dict[str, Any], at: datetime.datetime) -> None:
    leeway = datetime.timedelta(seconds=LEEWAY)
    valid_from = datetime.datetime.fromisoformat(credential["validFrom"])
    if at + leeway < valid_from:
        raise CredentialError(f"{name} is not valid until {credential['validFrom']}.")
    if "validUntil" in credential:
        valid_until = datetime.datetime.fromisoformat(credential["validUntil"])
        if at - leeway >= valid_until:
            raise CredentialError(f"{name} expired at {credential['validUntil']}.")


def _check_status(
    name: str, credential: dict[str, Any], status_list: dict[str, Any], at: datetime.datetime
) -> None:
    entry = credential.get("credentialStatus")
    if not isinstance(entry, dict) or entry.get("type") != "BitstringStatusListEntry":
        raise CredentialError(f"{name} has no BitstringStatusListEntry to check its status by.")
    if entry.get("statusListCredential") != status_list.get("id"):
        raise CredentialError(
            f"{name}'s status is in the list {shorten(entry.get('statusListCredential'))}; the "
            f"status list given is {shorten(status_list.get('id'))}."
        )
    issuer = claims_of(credential)["iss"]
    if status_list.get("issuer") != issuer:
        raise CredentialError(
            f"The status list is issued by {shorten(status_list.get('issuer'))}, not by the "
            f"credential's issuer {shorten(issuer)}."
        )
    _check_dates("The status list", status_list, at)
    listed = status_list.get("credentialSubject", {})
    index = entry.get("statusListIndex")
    if not isinstance(index, str) or not index.isdecimal():
        raise CredentialError(f"{name}'s statusListIndex is {shorten(index)}, not a number.")
    try:
        revoked = is_set(listed.get("encodedList", ""), int(index))
    except ValueError as exc:
        raise CredentialError(f"Cannot read the status list: {exc}.") from None
    if revoked:
        raise CredentialError(f"{name} was revoked (bit {index} of the status list is set).")
