"""The example site's Open Badges 3.0 settings (see docs/openbadges.md), from two variables:

- `EXAMPLE_PUBLIC_URL`: the URL the site is reached at, by default `http://127.0.0.1:8000`.
  The issuer's profile is `{site}/openbadges/issuer`, what the credentials link to is under
  `{site}/openbadges`, and a user's credentials name them by their page, `{site}/users/{id}`.
- `EXAMPLE_SIGNING_KEY`: the path of the PEM private key the credentials are signed with
  (RSA, for RS256). Unset, the site signs with a demo key: an RSA key generated on the first
  start into `openbadges-demo-key.pem` next to the SQLite database (in the current directory
  for PostgreSQL or MariaDB), readable by its owner only. It is for trying the site out: a
  real site keeps its key out of the data directory and sets the variable.

Each app enters `configured()` at startup, before abadges connects, and leaves it at shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import uuid
from collections.abc import Iterator, Mapping

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from abadges import badges
from abadges.openbadges import Issuer, OpenBadgesSettings

PUBLIC_URL = "EXAMPLE_PUBLIC_URL"
SIGNING_KEY = "EXAMPLE_SIGNING_KEY"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEMO_KEY = "openbadges-demo-key.pem"
ISSUER_NAME = "abadges example site"

logger = logging.getLogger("examples.credentials")


def public_url(environ: Mapping[str, str] = os.environ) -> str:
    """The site's public URL, without a trailing "/"."""
    return (environ.get(PUBLIC_URL) or DEFAULT_PUBLIC_URL).rstrip("/")


def settings(environ: Mapping[str, str] = os.environ) -> OpenBadgesSettings:
    """The site's `OpenBadgesSettings`; the demo key is generated if it is needed and missing."""
    site = public_url(environ)
    key = environ.get(SIGNING_KEY) or str(demo_key(demo_key_path(badges.settings.database_url)))

    def recipient(user_id: str) -> str:
        return f"{site}/users/{user_id}"

    return OpenBadgesSettings(
        issuer=Issuer(id=f"{site}/openbadges/issuer", name=ISSUER_NAME, url=site),
        base_url=f"{site}/openbadges",
        signing_key=key,
        recipient=recipient,
    )


@contextlib.contextmanager
def configured(environ: Mapping[str, str] = os.environ) -> Iterator[None]:
    """`badges.configure(openbadges=settings())` until the block ends (abadges must not be
    connected on entry), then the settings configured before."""
    with badges.configured(openbadges=settings(environ)):
        yield


def demo_key_path(database_url: str) -> pathlib.Path:
    """Where the demo key goes: next to a SQLite database's file, else the current directory."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return pathlib.Path(url.database).parent / DEMO_KEY
    return pathlib.Path(DEMO_KEY)


def demo_key(path: pathlib.Path) -> pathlib.Path:
    """`path`, where an RSA private key is generated (mode 0600) unless there is one already."""
    if path.exists():
        return path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Written whole under another name, then linked into place: two apps starting at once
    # never read half a key, and the first one's key is the one both use.
    draft = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
            logger.warning(
                "Open Badges are signed with a demo key, generated into %s; set %s to the "
                "path of your own key.",
                path,
                SIGNING_KEY,
            )
    finally:
        draft.unlink()
    return path
