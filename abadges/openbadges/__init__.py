"""Open Badges 3.0: each award an `OpenBadgeCredential`, signed as a VC-JWT, that a user can
carry to a wallet or another site and anyone can verify (see docs/openbadges.md).

The registry issues them (`badges.credential()`, `credential_jwt()`, `jwks()`,
`status_list()`, `verify_credential()`) once `badges.configure(openbadges=...)` is given
`OpenBadgesSettings`; `verify()` checks one offline, from the published keys and status list.
"""

from __future__ import annotations

from ..exceptions import CredentialError
from .baking import bake_png, unbake_png
from .settings import Issuer, OpenBadgesSettings
from .verifying import verify

__all__ = [
    "CredentialError",
    "Issuer",
    "OpenBadgesSettings",
    "bake_png",
    "unbake_png",
    "verify",
]
