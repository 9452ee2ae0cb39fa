"""The JSON-LD documents: the issuer's profile, an achievement per badge level, a credential
per award, and the status list. Plain functions of their data: nothing here signs or reads."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import urllib.parse
from typing import Any

from ..awards import Award
from ..base import Badge
from .settings import Issuer, OpenBadgesSettings

#: The contexts every Open Badges 3.0 credential starts with: VC 2.0's, then Open Badges'.
CONTEXTS = [
    "https://www.w3.org/ns/credentials/v2",
    "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
]
CREDENTIAL_TYPES = ["VerifiableCredential", "OpenBadgeCredential"]
STATUS_LIST_TYPES = ["VerifiableCredential", "BitstringStatusListCredential"]


def iso(at: datetime.datetime) -> str:
    """`at` as the credentials give times: UTC, to the second, with a "Z"."""
    return at.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def image(url: str | None, base_url: str) -> dict[str, str] | None:
    """An `Image` of a badge's image, made absolute against the site of `base_url`."""
    return None if url is None else {"id": urllib.parse.urljoin(base_url, url), "type": "Image"}


def profile(issuer: Issuer) -> dict[str, Any]:
    """The issuer's `Profile`, as served at its id and embedded in each credential."""
    document: dict[str, Any] = {"id": issuer.id, "type": ["Profile"], "name": issuer.name}
    if issuer.url is not None:
        document["url"] = issuer.url
    if issuer.email is not None:
        document["email"] = issuer.email
    if issuer.image is not None:
        document["image"] = {"id": issuer.image, "type": "Image"}
    return document


def achievement_id(base_url: str, slug: str, level: int) -> str:
    return f"{base_url}/achievements/{urllib.parse.quote(slug, safe='')}/{level}"


def credential_id(base_url: str, award_id: int) -> str:
    return f"{base_url}/credentials/{award_id}"


def status_list_id(base_url: str) -> str:
    return f"{base_url}/status"


def achievement(settings: OpenBadgesSettings, badge: Badge, level: int) -> dict[str, Any]:
    """The `Achievement` of a badge's level: its name, description (the name when it has
    none), criteria and image."""
    detail = badge.detail(level)
    description = detail.description or detail.name
    document: dict[str, Any] = {
        "id": achievement_id(settings.base_url, badge.slug, level),
        "type": ["Achievement"],
        "achievementType": "Badge",
        "name": detail.name,
        "description": description,
        "criteria": {"narrative": description},
        "creator": profile(settings.issuer),
    }
    picture = image(badge.image_of(level), settings.base_url)
    if picture is not None:
        document["image"] = picture
    return document


def subject(recipient: str, award: Award, secret: bytes) -> dict[str, Any]:
    """The `AchievementSubject`'s identity: `id` for a URL or a DID; for an email address, an
    `IdentityObject` of its salted SHA-256 hash. The salt is an HMAC of the award's id under
    `secret`, so that one award's credential comes out the same each time, and no one can tell
    two credentials of one email apart from two of two emails."""
    email = recipient.removeprefix("mailto:")
    if "@" in email and ":" not in email:
        salt = hmac.new(secret, str(award.id).encode(), hashlib.sha256).hexdigest()[:32]
        digest = hashlib.sha256((email.strip().lower() + salt).encode()).hexdigest()
        return {
            "identifier": [
                {
                    "type": "IdentityObject",
                    "identityHash": f"sha256${digest}",
                    "identityType": "emailAddress",
                    "hashed": True,
                    "salt": salt,
                }
            ]
        }
    return {"id": recipient}


def credential(
    settings: OpenBadgesSettings,
    badge: Badge,
    award: Award,
    identity: dict[str, Any],
) -> dict[str, Any]:
    """The `OpenBadgeCredential` of `award`, whose subject is `identity` (what `subject()`
    gives)."""
    base_url = settings.base_url
    status_list = status_list_id(base_url)
    found = achievement(settings, badge, award.level)
    document: dict[str, Any] = {
        "@context": CONTEXTS,
        "id": credential_id(base_url, award.id),
        "type": CREDENTIAL_TYPES,
        "name": found["name"],
        "issuer": profile(settings.issuer),
        "validFrom": iso(award.awarded_at),
        "awardedDate": iso(award.awarded_at),
        "credentialSubject": {"type": ["AchievementSubject"], **identity, "achievement": found},
        "credentialStatus": {
            "id": f"{status_list}#{award.id}",
            "type": "BitstringStatusListEntry",
            "statusPurpose": "revocation",
            "statusListIndex": str(award.id),
            "statusListCredential": status_list,
        },
    }
    if "image" in found:
        document["image"] = found["image"]
    if award.expires_at is not None:
        document["validUntil"] = iso(award.expires_at)
    return document


def status_list(
    settings: OpenBadgesSettings, encoded: str, at: datetime.datetime
) -> dict[str, Any]:
    """The `BitstringStatusListCredential` of the revoked awards, `encoded` as
    `status.encode()` gives it."""
    list_id = status_list_id(settings.base_url)
    return {
        "@context": CONTEXTS[:1],
        "id": list_id,
        "type": STATUS_LIST_TYPES,
        "issuer": settings.issuer.id,
        "validFrom": iso(at),
        "credentialSubject": {
            "id": f"{list_id}#list",
            "type": "BitstringStatusList",
            "statusPurpose": "revocation",
            "encodedList": encoded,
        },
    }
