"""The example apps serve Open Badges 3.0 (`examples/credentials.py`, the `/openbadges/`
endpoints of `examples/api.py`) over real HTTP, each on every database: the credentials
validate against 1EdTech's schema, verify with PyJWT and with `abadges.openbadges.verify()`
from what the site publishes, stop verifying once revoked, and come baked in PNGs."""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import stat
import urllib.parse
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from abadges import CredentialError, badges
from abadges.openbadges import bake_png, unbake_png, verify
from examples import credentials, pictures, store
from tests.support.example_site import FRAMEWORKS, call, serve
from tests.support.schemas import CREDENTIAL_SCHEMA, PROFILE_SCHEMA

#: Where the site says it is: not where the tests reach it, as behind a proxy.
SITE = "https://badges.example.test"


@pytest.fixture
def public_site(site_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The site's public URL, given with a trailing "/", which is dropped."""
    monkeypatch.setenv("EXAMPLE_PUBLIC_URL", f"{SITE}/")
    return SITE


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    media_type: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """The answer to a GET of `url` (a path, or a URL of the public site), which must have
    `status` and `media_type`."""
    if url.startswith(SITE):
        url = url.removeprefix(SITE)
    response = await client.get(url, headers=headers)
    assert response.status_code == status, (url, response.text)
    assert response.headers["content-type"].split(";")[0] == media_type, url
    return response


async def refused(client: httpx.AsyncClient, path: str, status: int) -> str:
    """The error of a refused request, which gets `status` and a JSON `{"error": ...}`."""
    response = await client.get(path)
    assert response.status_code == status, (path, response.text)
    assert response.headers["content-type"].startswith("application/json"), path
    body = response.json()
    assert list(body) == ["error"], path
    error: str = body["error"]
    return error


async def published(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """The site's JWK Set and its current status list."""
    jwks = (await fetch(client, "/openbadges/jwks.json", "application/jwk-set+json")).json()
    status = await fetch(client, "/openbadges/status", "application/vc+jwt")
    assert status.headers["cache-control"] == "no-store"
    return jwks, status.text


async def unseen_ids(client: httpx.AsyncClient, user: str) -> dict[str, list[int]]:
    """The ids of the user's awards, newest first, by slug (from their unseen list)."""
    found: dict[str, list[int]] = {}
    for award in (await call(client, "GET", f"/users/{user}/unseen"))["awards"]:
        found.setdefault(award["slug"], []).append(award["id"])
    return found


def pyjwt_claims(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The claims of `token`, checked by PyJWT with the key its `kid` names in `jwks`."""
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = pyjwt.PyJWKSet.from_dict(jwks)[kid].key
    claims: dict[str, Any] = pyjwt.decode(
        token, key, algorithms=["RS256"], issuer=f"{SITE}/openbadges/issuer"
    )
    return claims


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_held_award_is_served_as_a_credential_that_verifies_until_revoked(
    framework: str, public_site: str
) -> None:
    async with serve(framework) as client:
        await call(client, "POST", "/users/ana/points", {"points": 6000})  # Bronze, Windfall
        ids = await unseen_ids(client, "ana")
        [bronze], [windfall] = ids["points"], ids["windfall"]
        path = f"/openbadges/credentials/{bronze}"

        # JSON-LD by default, valid by 1EdTech's schema, naming the public site's URLs.
        response = await fetch(client, path, "application/ld+json")
        assert response.headers["vary"] == "Accept"
        assert "content-disposition" not in response.headers
        document = response.json()
        CREDENTIAL_SCHEMA.validate(document)
        assert document["id"] == f"{SITE}/openbadges/credentials/{bronze}"
        assert document["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
        assert document["issuer"]["id"] == f"{SITE}/openbadges/issuer"
        subject = document["credentialSubject"]
        assert subject["id"] == f"{SITE}/users/ana"
        assert subject["achievement"]["id"] == f"{SITE}/openbadges/achievements/points/1"
        assert subject["achievement"]["name"] == "Bronze"
        assert document["credentialStatus"]["statusListIndex"] == str(bronze)
        windfall_document = (
            await fetch(client, f"/openbadges/credentials/{windfall}", "application/ld+json")
        ).json()
        assert windfall_document["credentialSubject"]["achievement"]["name"] == "Windfall"

        # The VC-JWT, for ?format=jwt or an Accept that names it; ?format= wins over Accept.
        jwt_response = await fetch(client, f"{path}?format=jwt", "application/vc+jwt")
        assert jwt_response.headers["content-disposition"] == (
            f'attachment; filename="credential-{bronze}.jwt"'
        )
        token = jwt_response.text
        accepted = await fetch(
            client, path, "application/vc+jwt", headers={"accept": "application/vc+jwt"}
        )
        assert accepted.text == token
        as_json = await fetch(
            client,
            f"{path}?format=json",
            "application/ld+json",
            headers={"accept": "application/vc+jwt"},
        )
        assert as_json.json() == document

        # What a third party does: PyJWT with the published keys, and verify() with the
        # status list too.
        jwks, status = await published(client)
        claims = pyjwt_claims(token, jwks)
        assert claims["jti"] == document["id"]
        assert claims["sub"] == f"{SITE}/users/ana"
        assert {name: claims[name] for name in document} == document
        assert verify(token, jwks, status_list=status) == document
        assert await badges.verify_credential(token) == document

        # The URLs the credential names are the site's.
        profile = (await fetch(client, document["issuer"]["id"], "application/ld+json")).json()
        PROFILE_SCHEMA.validate(profile)
        assert profile == {"@context": document["@context"], **document["issuer"]}
        assert profile["url"] == SITE
        achievement = (
            await fetch(client, subject["achievement"]["id"], "application/ld+json")
        ).json()
        assert achievement == {"@context": document["@context"], **subject["achievement"]}
        image = subject["achievement"]["image"]["id"]
        assert image == f"{SITE}/static/badges/points.svg"
        picture = await fetch(client, image, "image/svg+xml")
        assert picture.content == (pictures.HERE / "static/badges/points.svg").read_bytes()
        listed = document["credentialStatus"]["statusListCredential"]
        assert listed == f"{SITE}/openbadges/status"
        assert (await fetch(client, listed, "application/vc+jwt")).text.count(".") == 2

        # The baked badge: Bronze's own picture, the credential inside.
        baked = await fetch(client, f"{path}.png", "image/png")
        assert baked.headers["content-disposition"] == (
            f'attachment; filename="credential-{bronze}.png"'
        )
        assert baked.content == bake_png(pictures.picture("points", 1).read_bytes(), token)
        unbaked = unbake_png(baked.content)
        assert unbaked is not None
        assert verify(unbaked, jwks, status_list=status) == document

        # Revoked: the credential is no longer served, and the fresh status list says so.
        taken = {"badge": "points", "by": "mod:9", "reason": "Points from a bug"}
        assert await call(client, "POST", "/users/ana/revocations", taken) == {"revoked": 1}
        gone = f"Award {bronze} was revoked: a credential is issued for held awards only."
        for revoked_path in (path, f"{path}?format=jwt", f"{path}.png"):
            assert await refused(client, revoked_path, 404) == gone
        assert verify(token, jwks, status_list=status) == document  # The list as it was.
        jwks, status = await published(client)
        with pytest.raises(CredentialError, match=f"was revoked \\(bit {bronze} of the status"):
            verify(token, jwks, status_list=status)
        with pytest.raises(CredentialError, match="was revoked"):
            verify(unbaked, jwks, status_list=status)
        # The windfall, still held, still verifies.
        windfall_token = (
            await fetch(
                client, f"/openbadges/credentials/{windfall}?format=jwt", "application/vc+jwt"
            )
        ).text
        assert verify(windfall_token, jwks, status_list=status) == windfall_document


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_unknown_expired_and_bad_credentials_and_achievements_are_refused(
    framework: str, public_site: str
) -> None:
    async with serve(framework) as client:
        assert await refused(client, "/openbadges/credentials/999", 404) == (
            "No award has the id 999: it has no credential."
        )
        assert await refused(client, "/openbadges/credentials/999.png", 404) == (
            "No award has the id 999: it has no credential."
        )
        # Cy's weekly badge, earned 8 days ago, expired yesterday.
        old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=8)
        user = await store.load_user("cy")
        [weekly] = await badges.possibly_award_badge(
            "visited", user=user, day=old.date(), force_timestamp=old
        )
        expired = f"Award {weekly.id} was expired: a credential is issued for held awards only."
        assert await refused(client, f"/openbadges/credentials/{weekly.id}", 404) == expired
        assert await refused(client, f"/openbadges/credentials/{weekly.id}.png", 404) == expired

        bad_id = "Award ids are whole numbers from 1, of up to 18 digits; got {!r}."
        for award_id in ("abc", "0", "012", "-1", "1" * 19, "%D9%A1"):
            path = f"/openbadges/credentials/{award_id}"
            shown = urllib.parse.unquote(award_id)
            assert await refused(client, path, 400) == bad_id.format(shown), path
            assert await refused(client, f"{path}.png", 400) == bad_id.format(shown), path
        path = f"/openbadges/credentials/{weekly.id}"
        assert await refused(client, f"{path}?format=xml", 400) == (
            "format must be one of 'json', 'jwt'; got 'xml'."
        )
        assert await refused(client, f"{path}?format=jwt&format=json", 400) == (
            "format must be given once; got it 2 times."
        )

        gold = (
            await fetch(client, "/openbadges/achievements/points/3", "application/ld+json")
        ).json()
        assert (gold["id"], gold["name"], gold["description"]) == (
            f"{SITE}/openbadges/achievements/points/3",
            "Gold",
            "Over 10,000 points",
        )
        assert gold["creator"]["id"] == f"{SITE}/openbadges/issuer"
        assert await refused(client, "/openbadges/achievements/nope/1", 404) == (
            "No badge with slug 'nope' is registered; "
            "registered slugs: ['addict', 'points', 'weekly', 'windfall']."
        )
        assert await refused(client, "/openbadges/achievements/points/4", 404) == (
            "Badge 'points' has 3 level(s); level 4 is out of range."
        )
        assert await refused(client, "/openbadges/achievements/points/x", 404) == (
            "Badge 'points' has 3 level(s); level 'x' is out of range."
        )


async def test_the_user_page_links_each_badge_held_to_its_credential_and_baked_png(
    public_site: str,
) -> None:
    async with serve("starlette") as client:
        await call(client, "POST", "/users/ana/points", {"points": 6000})  # Bronze, Windfall
        await call(client, "POST", "/users/ana/points", {"points": 1000})  # Windfall again
        ids = await unseen_ids(client, "ana")
        jwks, status = await published(client)
        page = await client.get("/users/ana")
        assert page.status_code == 200
        cards = re.findall(
            r'<li class="card held-badge [^"]*" data-slug="(\w+)".*?</li>', page.text, re.S
        )
        assert cards == ["windfall", "points"]
        links = re.findall(
            r'<a class="(credential|baked)" href="([^"]+)" download>([^<]+)</a>', page.text
        )
        # Each badge held once, by its newest award: the second windfall.
        newest = [ids["windfall"][0], ids["points"][0]]
        assert links == [
            (kind, href.format(award_id), text)
            for award_id in newest
            for kind, href, text in (
                ("credential", "/openbadges/credentials/{}?format=jwt", "Download credential"),
                ("baked", "/openbadges/credentials/{}.png", "Baked PNG"),
            )
        ]
        for award_id in newest:
            token = await fetch(
                client, f"/openbadges/credentials/{award_id}?format=jwt", "application/vc+jwt"
            )
            assert token.headers["content-disposition"] == (
                f'attachment; filename="credential-{award_id}.jwt"'
            )
            checked = verify(token.text, jwks, status_list=status)
            assert checked["id"] == f"{SITE}/openbadges/credentials/{award_id}"
            baked = await fetch(client, f"/openbadges/credentials/{award_id}.png", "image/png")
            assert unbake_png(baked.content) == token.text


def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_demo_key_is_made_once_private_and_a_key_of_your_own_replaces_it(
    framework: str,
    site_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    demo = credentials.demo_key_path(site_env["ABADGES_DATABASE_URL"])
    if demo.exists():  # The session's SQLite database's, made by a test before.
        demo.unlink()
    async with serve(framework) as client:
        [first] = (await fetch(client, "/openbadges/jwks.json", "application/jwk-set+json")).json()[
            "keys"
        ]
    assert demo.is_file()
    assert stat.S_IMODE(demo.stat().st_mode) == 0o600
    assert first["kid"] == RSAKey.import_key(demo.read_bytes()).thumbprint()
    assert [path.name for path in demo.parent.glob(".openbadges-demo-key.pem.*")] == []
    # Made once: the next start signs with it. The site's default address, when
    # EXAMPLE_PUBLIC_URL is not set.
    async with serve(framework) as client:
        again = (await fetch(client, "/openbadges/jwks.json", "application/jwk-set+json")).json()
        assert again["keys"] == [first]
        issuer = (await fetch(client, "/openbadges/issuer", "application/ld+json")).json()
        assert issuer["id"] == "http://127.0.0.1:8000/openbadges/issuer"

    own = tmp_path / "own-key.pem"
    own.write_bytes(rsa_pem())
    monkeypatch.setenv("EXAMPLE_SIGNING_KEY", str(own))
    async with serve(framework) as client:
        await call(client, "POST", "/users/ana/points", {"points": 6000})
        [bronze] = (await unseen_ids(client, "ana"))["points"]
        jwks, status = await published(client)
        [key] = jwks["keys"]
        assert key["kid"] == RSAKey.import_key(own.read_bytes()).thumbprint() != first["kid"]
        token = await fetch(
            client, f"/openbadges/credentials/{bronze}?format=jwt", "application/vc+jwt"
        )
        assert pyjwt.get_unverified_header(token.text)["kid"] == key["kid"]
        assert verify(token.text, jwks, status_list=status)["id"].endswith(f"/credentials/{bronze}")
    # The settings of before are back once the app has stopped.
    assert badges.settings.openbadges is None
    assert os.environ["EXAMPLE_SIGNING_KEY"] == str(own)
