"""`CredentialIssuer`: the documents and the signed credentials of one registry's settings."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterable
from typing import Any

from .._utils import maybe_await, shorten
from ..awards import Award
from ..base import Badge
from . import documents
from .keys import SigningKeys
from .settings import OpenBadgesSettings
from .signing import sign
from .status import encode


class CredentialIssuer:
    """Builds and signs what `settings` issues; the registry gives it the awards."""

    def __init__(self, settings: OpenBadgesSettings) -> None:
        self.settings = settings
        self.keys = SigningKeys.load(settings)
        # The salts of hashed emails: secret while the signing key is.
        self._secret = hashlib.sha256(self.keys.key.as_pem(private=True)).digest()
        base = re.escape(documents.credential_id(settings.base_url, 0)[:-1])
        self._credential_id = re.compile(base + r"([1-9][0-9]{0,18})")

    def issuer_profile(self) -> dict[str, Any]:
        return {"@context": documents.CONTEXTS, **documents.profile(self.settings.issuer)}

    def achievement(self, badge: Badge, level: int) -> dict[str, Any]:
        document = documents.achievement(self.settings, badge, level)
        return {"@context": documents.CONTEXTS, **document}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(key) for key in self.keys.jwks["keys"]]}

    async def credential(self, badge: Badge, award: Award) -> dict[str, Any]:
        """The credential of `award`, its subject what `recipient(award.user_id)` gives."""
        recipient = await maybe_await(self.settings.recipient(award.user_id))
        if not isinstance(recipient, str) or not (
            re.fullmatch(r"(mailto:)?[^@\s:]+@[^@\s:]+", recipient)
            or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", recipient)
        ):
            raise ValueError(
                f"OpenBadgesSettings recipient({award.user_id!r}) must give an email address, "
                f"a URL or a DID; it gave {shorten(recipient)}."
            )
        identity = documents.subject(recipient, award, self._secret)
        return documents.credential(self.settings, badge, award, identity)

    def sign(self, credential: dict[str, Any]) -> str:
        return sign(credential, self.keys)

    def status_list(self, revoked: Iterable[int], at: datetime.datetime) -> str:
        """The status list of the `revoked` award ids, signed."""
        document = documents.status_list(self.settings, encode(revoked), at)
        return sign(document, self.keys)

    def award_id(self, credential: dict[str, Any]) -> int | None:
        """The award id of a credential this issuer issued, or None."""
        found = self._credential_id.fullmatch(str(credential.get("id")))
        return None if found is None else int(found[1])
