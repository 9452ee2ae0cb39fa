"""Open Badges 3.0: the credentials against 1EdTech's JSON Schema, their VC-JWTs checked by a
second implementation (PyJWT) and tampered with part by part, the status list, key rotation,
baked PNGs, and the registry's credentials of held, revoked, replaced and expired awards on
every database."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import pathlib
import random
import struct
import zlib
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from abadges import (
    Award,
    Badge,
    BadgeAwarded,
    BadgeDetail,
    BadgeRegistry,
    ConfigurationError,
    CredentialError,
)
from abadges.openbadges import (
    Issuer,
    OpenBadgesSettings,
    bake_png,
    unbake_png,
    verify,
)
from abadges.openbadges import status as status_list
from abadges.openbadges.issuing import CredentialIssuer
from abadges.openbadges.keys import allowing_eddsa
from tests.support.badges import LadderBadge, RankBadge, ThanksBadge
from tests.support.schemas import CREDENTIAL_SCHEMA, PROFILE_SCHEMA

UTC = datetime.UTC
NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ISSUER = Issuer(id="https://example.com/issuer", name="Example Q&A", url="https://example.com")
BASE_URL = "https://example.com/openbadges"


def rsa_pem(bits: int = 2048) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


RSA_PEM = rsa_pem()
OLD_RSA_PEM = rsa_pem()
ED25519_PEM = ed25519.Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


def settings(**overrides: Any) -> OpenBadgesSettings:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "base_url": BASE_URL,
        "signing_key": RSA_PEM,
        "recipient": lambda user_id: f"{user_id}@example.com",
        **overrides,
    }
    return OpenBadgesSettings(**values)


def award(**overrides: Any) -> Award:
    values: dict[str, Any] = {
        "id": 7,
        "user_id": "ana",
        "slug": "rank",
        "level": 3,
        "name": "Gold",
        "description": "The best",
        "awarded_at": datetime.datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=UTC),
        **overrides,
    }
    return Award(**values)


async def issued(
    config: OpenBadgesSettings | None = None, badge: Badge | None = None, **fields: Any
) -> tuple[CredentialIssuer, dict[str, Any], str]:
    issuer = CredentialIssuer(config or settings())
    document = await issuer.credential(badge or RankBadge(), award(**fields))
    return issuer, document, issuer.sign(document)


def segments(token: str) -> list[dict[str, Any]]:
    return [json.loads(base64.urlsafe_b64decode(part + "==")) for part in token.split(".")[:2]]


def encoded(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")


# The documents -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "subject"),
    [
        ("ana@example.com", "identifier"),
        ("mailto:ana@example.com", "identifier"),
        ("https://example.com/users/ana", "id"),
        ("did:web:example.com:users:ana", "id"),
    ],
)
async def test_credentials_validate_against_the_open_badges_schema(
    recipient: str, subject: str
) -> None:
    _, document, _ = await issued(settings(recipient=lambda user_id: recipient))
    CREDENTIAL_SCHEMA.validate(document)
    assert document["@context"] == [
        "https://www.w3.org/ns/credentials/v2",
        "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
    ]
    assert document["id"] == f"{BASE_URL}/credentials/7"
    assert document["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert document["issuer"]["id"] == ISSUER.id
    assert document["validFrom"] == "2026-05-01T09:30:15Z"
    assert "validUntil" not in document
    achievement = document["credentialSubject"]["achievement"]
    assert achievement["id"] == f"{BASE_URL}/achievements/rank/3"
    assert (achievement["name"], achievement["description"]) == ("Gold", "The best")
    assert document["credentialStatus"]["statusListIndex"] == "7"
    credential_subject = document["credentialSubject"]
    assert set(credential_subject) == {"type", "achievement", subject}
    if subject == "id":
        assert credential_subject["id"] == recipient


async def test_an_email_recipient_is_hashed_with_a_salt_of_its_own_per_award() -> None:
    issuer = CredentialIssuer(settings())
    first = await issuer.credential(RankBadge(), award())
    again = await issuer.credential(RankBadge(), award())
    other = await issuer.credential(RankBadge(), award(id=8))
    [identity] = first["credentialSubject"]["identifier"]
    salt = identity["salt"]
    assert (
        identity["identityHash"]
        == "sha256$" + hashlib.sha256(f"ana@example.com{salt}".encode()).hexdigest()
    )
    assert "ana@example.com" not in json.dumps(first)
    assert again == first
    assert other["credentialSubject"]["identifier"][0]["salt"] != salt


async def test_an_expiring_award_has_valid_until_and_an_image_becomes_absolute() -> None:
    class Pictured(Badge):
        slug = "pictured"
        levels = [BadgeDetail("Framed", image="/static/framed.svg")]
        events = ["framed"]

        def award(self, **state: Any) -> BadgeAwarded:
            return BadgeAwarded()

    expires = datetime.datetime(2026, 5, 8, 9, 30, 15, tzinfo=UTC)
    _, document, _ = await issued(
        badge=Pictured(), slug="pictured", level=1, expires_at=expires, description=None
    )
    CREDENTIAL_SCHEMA.validate(document)
    assert document["validUntil"] == "2026-05-08T09:30:15Z"
    image = {"id": "https://example.com/static/framed.svg", "type": "Image"}
    assert document["image"] == document["credentialSubject"]["achievement"]["image"] == image
    # No description: the name stands for it, as the schema requires one.
    assert document["credentialSubject"]["achievement"]["description"] == "Framed"


def test_the_issuer_profile_validates_against_the_profile_schema() -> None:
    full = Issuer(
        id=ISSUER.id,
        name="Example",
        url="https://example.com",
        email="badges@example.com",
        image="https://example.com/logo.png",
    )
    for issuer in (ISSUER, full, Issuer(id="did:web:example.com", name="Bare")):
        profile = CredentialIssuer(settings(issuer=issuer)).issuer_profile()
        PROFILE_SCHEMA.validate(profile)
        assert profile["id"] == issuer.id
    assert "url" not in profile
    assert (
        CredentialIssuer(settings(issuer=full)).issuer_profile()["image"]["id"].endswith("logo.png")
    )


@pytest.mark.parametrize(
    "returned", ["ana", "", "ana@", "two@at@example.com", 7, None, "https://a b"]
)
async def test_a_recipient_that_is_no_email_url_or_did_is_refused(returned: object) -> None:
    issuer = CredentialIssuer(settings(recipient=lambda user_id: returned))
    with pytest.raises(ValueError, match=r"recipient\('ana'\) must give an email address"):
        await issuer.credential(RankBadge(), award())


# Signing, and a second implementation's verification -----------------------------------------


async def test_pyjwt_verifies_the_rs256_credential_by_its_kid() -> None:
    issuer, document, token = await issued()
    header, _ = segments(token)
    [jwk] = issuer.jwks()["keys"]
    assert header == {"alg": "RS256", "typ": "JWT", "kid": jwk["kid"], "jwk": jwk}
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    assert "d" not in jwk  # Public only.
    key = pyjwt.PyJWKSet.from_dict(issuer.jwks())[header["kid"]].key
    claims = pyjwt.decode(
        token, key, algorithms=["RS256"], options={"verify_exp": False, "verify_nbf": False}
    )
    assert claims["iss"] == ISSUER.id
    assert claims["jti"] == document["id"]
    assert claims["nbf"] == int(datetime.datetime(2026, 5, 1, 9, 30, 15, tzinfo=UTC).timestamp())
    assert {name: claims[name] for name in document} == document
    assert verify(token, issuer.jwks(), now=NOW) == document


async def test_pyjwt_verifies_an_eddsa_credential_with_exp_and_sub() -> None:
    expires = datetime.datetime(2026, 7, 1, tzinfo=UTC)
    config = settings(
        signing_key=ED25519_PEM,
        algorithm="EdDSA",
        recipient=lambda user_id: f"https://example.com/users/{user_id}",
    )
    issuer, document, token = await issued(config, expires_at=expires)
    header, _ = segments(token)
    assert header["alg"] == "EdDSA"
    assert header["jwk"] == issuer.jwks()["keys"][0]
    assert "d" not in header["jwk"]
    # A verifier that reads the key from the header (as 1EdTech's examples do) gets it too.
    assert pyjwt.decode(
        token,
        pyjwt.PyJWK(header["jwk"]).key,
        algorithms=["EdDSA"],
        options={"verify_nbf": False, "verify_exp": False},
    )
    key = pyjwt.PyJWKSet.from_dict(issuer.jwks())[header["kid"]].key
    claims = pyjwt.decode(
        token, key, algorithms=["EdDSA"], options={"verify_nbf": False, "verify_exp": False}
    )
    assert claims["sub"] == "https://example.com/users/ana"
    assert claims["exp"] == int(expires.timestamp())
    assert verify(token, issuer.jwks(), now=NOW) == document


def tampered_payload(token: str) -> str:
    header, payload = segments(token)
    payload["credentialSubject"]["achievement"]["name"] = "Platinum"
    return ".".join([encoded(header), encoded(payload), token.split(".")[2]])


def tampered_signature(token: str) -> str:
    head, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 1
    return ".".join([head, body, base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")])


def tampered_kid(token: str) -> str:
    header, _ = segments(token)
    return ".".join([encoded({**header, "kid": "someone-else"}), *token.split(".")[1:]])


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (tampered_payload, "signature does not verify"),
        (tampered_signature, "signature does not verify"),
        (tampered_kid, "names a key that the JWK Set does not hold"),
        (lambda token: token.rsplit(".", 1)[0], "is not a compact JWT"),
        (lambda token: "x.y.z", "is not a valid JWT"),
    ],
    ids=["payload", "signature", "kid", "cut", "garbage"],
)
async def test_a_tampered_credential_fails(tamper: Callable[[str], str], message: str) -> None:
    issuer, _, token = await issued()
    verify(token, issuer.jwks(), now=NOW)
    with pytest.raises(CredentialError, match=message):
        verify(tamper(token), issuer.jwks(), now=NOW)
    with pytest.raises(pyjwt.InvalidTokenError):
        key = pyjwt.PyJWKSet.from_dict(issuer.jwks()).keys[0].key
        pyjwt.decode(tamper(token), key, algorithms=["RS256"], options={"verify_nbf": False})


async def test_a_stranger_s_key_in_the_header_is_not_trusted() -> None:
    # Signed by someone else, who puts their own public key in the header and our kid.
    issuer, _, token = await issued()
    header, payload = segments(token)
    stranger = RSAKey.import_key(rsa_pem())
    forged = jose_jwt.encode({**header, "jwk": stranger.as_dict(private=False)}, payload, stranger)
    with pytest.raises(CredentialError, match="signature does not verify"):
        verify(forged, issuer.jwks(), now=NOW)


async def test_a_credential_is_checked_against_its_dates() -> None:
    expires = datetime.datetime(2026, 5, 8, tzinfo=UTC)
    issuer, _, token = await issued(expires_at=expires)
    jwks = issuer.jwks()
    verify(token, jwks, now=datetime.datetime(2026, 5, 7, tzinfo=UTC))
    with pytest.raises(CredentialError, match=r"expired at 2026-05-08T00:00:00Z"):
        verify(token, jwks, now=expires + datetime.timedelta(minutes=2))
    with pytest.raises(CredentialError, match=r"is not valid until 2026-05-01T09:30:15Z"):
        verify(token, jwks, now=datetime.datetime(2026, 4, 30, tzinfo=UTC))
    # A minute's leeway either side, for clocks that differ.
    verify(token, jwks, now=datetime.datetime(2026, 5, 1, 9, 29, 30, tzinfo=UTC))
    verify(token, jwks, now=expires + datetime.timedelta(seconds=30))


def resigned(token: str, issuer: CredentialIssuer, change: Callable[[dict[str, Any]], None]) -> str:
    """`token` signed again, with the right key, after `change` of its payload."""
    header, payload = segments(token)
    change(payload)
    return jose_jwt.encode(header, payload, issuer.keys.key)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(nbf=p["nbf"] - 86400), "JWT claim 'nbf' is"),
        (lambda p: p.update(iss="https://evil.example"), "JWT claim 'iss' is"),
        (lambda p: p.update(jti="https://example.com/openbadges/credentials/8"), "claim 'jti'"),
        (lambda p: p.update(exp=p["nbf"] + 1), "JWT claim 'exp' is"),
        (lambda p: p.update(sub="did:web:other"), "JWT claim 'sub' is"),
        (lambda p: p.pop("validFrom"), "payload is not a verifiable credential"),
    ],
)
async def test_the_jwt_claims_must_agree_with_the_credential(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    issuer, _, token = await issued()
    with pytest.raises(CredentialError, match=message):
        verify(resigned(token, issuer, change), issuer.jwks(), now=NOW)


@pytest.mark.parametrize("jwks", [{}, {"keys": [{"kty": "nope"}]}, [], {"keys": "x"}])
async def test_a_jwks_that_is_not_one_is_refused(jwks: Any) -> None:
    _, _, token = await issued()
    with pytest.raises(CredentialError, match="Cannot check the credential: jwks is not a JWK"):
        verify(token, jwks, now=NOW)


async def test_rotation_keeps_the_credentials_of_the_previous_key_valid() -> None:
    old_issuer, _, old_token = await issued(settings(signing_key=OLD_RSA_PEM))
    old_kid = old_issuer.keys.kid
    issuer, _, token = await issued(settings(previous_keys=[OLD_RSA_PEM]))
    assert [key["kid"] for key in issuer.jwks()["keys"]] == [issuer.keys.kid, old_kid]
    assert segments(token)[0]["kid"] == issuer.keys.kid != old_kid
    verify(token, issuer.jwks(), now=NOW)
    verify(old_token, issuer.jwks(), now=NOW)
    # Once the previous key is dropped from the set, its credentials no longer verify.
    with pytest.raises(CredentialError, match="does not hold"):
        verify(old_token, CredentialIssuer(settings()).jwks(), now=NOW)
    # A credential of the old key given the new key's kid: the signature fails.
    header, _ = segments(old_token)
    forged = ".".join([encoded({**header, "kid": issuer.keys.kid}), *old_token.split(".")[1:]])
    with pytest.raises(CredentialError, match="signature does not verify"):
        verify(forged, issuer.jwks(), now=NOW)


def test_keys_load_from_pem_text_bytes_a_path_and_a_jwk(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "signing.pem"
    path.write_bytes(RSA_PEM)
    jwk = RSAKey.import_key(RSA_PEM).as_dict(private=True)
    kids = {
        CredentialIssuer(settings(signing_key=source)).keys.kid
        for source in (RSA_PEM, RSA_PEM.decode(), str(path), path)
    }
    assert len(kids) == 1
    named = CredentialIssuer(settings(signing_key={**jwk, "kid": "2026-06"}))
    assert named.keys.kid == "2026-06"
    # A previous key may be given as its public key only.
    public = RSAKey.import_key(OLD_RSA_PEM).as_pem(private=False)
    assert len(CredentialIssuer(settings(previous_keys=[public])).jwks()["keys"]) == 2


def pem_of(private_key: Any) -> bytes:
    return bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"signing_key": "/nonexistent/key.pem"},
            "cannot read the key file '/nonexistent/key.pem'",
        ),
        ({"signing_key": 42}, "signing_key must be PEM text or bytes, a path"),
        ({"signing_key": b"-----BEGIN nothing"}, "signing_key is not an RSA key, which RS256"),
        ({"signing_key": ED25519_PEM}, "signing_key is not an RSA key, which RS256"),
        ({"signing_key": RSA_PEM, "algorithm": "EdDSA"}, "not an Ed25519 key, which EdDSA"),
        ({"signing_key": rsa_pem(1024)}, "an RSA key of 1024 bits; RS256 needs 2048 or more"),
        (
            {"signing_key": pem_of(x25519.X25519PrivateKey.generate()), "algorithm": "EdDSA"},
            "signing_key is an X25519 key; EdDSA signs with Ed25519",
        ),
        (
            {"signing_key": RSAKey.import_key(RSA_PEM).as_pem(private=False)},
            "signing_key is a public key",
        ),
        ({"previous_keys": [RSA_PEM]}, "names the key '.*' twice"),
        ({"previous_keys": [b"junk"]}, r"previous_keys\[0\] is not an RSA key"),
    ],
)
def test_a_bad_key_is_refused_naming_it(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CredentialIssuer(settings(**overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"issuer": "https://example.com"}, "issuer must be an abadges.openbadges.Issuer"),
        ({"base_url": "example.com"}, "base_url must be an http"),
        ({"base_url": "https://example.com/ob?x=1"}, "base_url must be an http"),
        ({"algorithm": "HS256"}, r"algorithm must be one of \['RS256', 'EdDSA'\]; got 'HS256'"),
        ({"recipient": "ana@example.com"}, "recipient must be a function of a user id"),
        ({"previous_keys": RSA_PEM}, "previous_keys must be a list of keys"),
    ],
)
def test_bad_settings_are_refused_naming_them(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        settings(**overrides)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": "example.com"}, "Issuer id must be an absolute URI"),
        ({"name": " "}, "Issuer name must be a non-empty str"),
        ({"url": "www.example.com"}, "Issuer url must be an absolute URI"),
        ({"image": 3}, "Issuer image must be an absolute URI"),
        ({"email": "badges"}, "Issuer email must be None or an email address"),
    ],
)
def test_a_bad_issuer_is_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Issuer(**{"id": ISSUER.id, "name": ISSUER.name, **fields})


def test_the_settings_repr_leaves_the_key_out() -> None:
    text = repr(settings(previous_keys=[OLD_RSA_PEM]))
    assert "PRIVATE" not in text
    assert text.startswith("OpenBadgesSettings(issuer=Issuer(") and "previous_keys=1" in text
    assert str(BASE_URL) in repr(settings(base_url=BASE_URL + "/"))  # The slash goes.


# The status list ------------------------------------------------------------------------------


def test_the_bitstring_sets_the_bits_of_the_revoked_ids_only() -> None:
    encoded_list = status_list.encode([3, 0, 131_071, 3])
    assert encoded_list.startswith("u")
    assert [status_list.is_set(encoded_list, i) for i in (0, 1, 2, 3, 4, 131_071)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    raw = zlib.decompress(base64.urlsafe_b64decode(encoded_list[1:] + "=="), 16 + zlib.MAX_WBITS)
    assert len(raw) * 8 == status_list.MIN_BITS  # 16 KB at least, for privacy.
    assert raw[0] == 0b1001_0000  # The first index is the leftmost bit.
    longer = status_list.encode([200_000])
    assert status_list.is_set(longer, 200_000) and not status_list.is_set(longer, 199_999)
    assert not status_list.is_set(status_list.encode([]), 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("z123", "does not start with the multibase prefix 'u'"),
        ("u!!!!", "is not base64url of GZIP data"),
        ("u" + base64.urlsafe_b64encode(b"not gzip").decode(), "is not base64url of GZIP"),
        (status_list.encode([1]), "its list has 131,072 entries; index 131072 is beyond them"),
    ],
)
def test_a_bad_encoded_list_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        status_list.is_set(text, 131_072)


def test_a_status_list_that_inflates_too_far_is_refused() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    packed = bomb.compress(bytes(status_list.MAX_BYTES + 1)) + bomb.flush()
    text = "u" + base64.urlsafe_b64encode(packed).decode().rstrip("=")
    with pytest.raises(ValueError, match="inflates to more than 16,777,216 bytes"):
        status_list.is_set(text, 1)


async def test_a_long_status_list_of_scattered_revocations_verifies() -> None:
    # 300,000 revocations scattered at random over 3 million awards: the list does not
    # compress well, and its token is far over joserfc's default 128 KB payload limit.
    issuer, _, token = await issued(id=2_999_999)
    scattered = {*random.Random(7).sample(range(1, 3_000_000), 300_000), 2_999_991}
    scattered.discard(2_999_999)
    listed = issuer.status_list(scattered, NOW)
    assert len(listed) > 128_000
    verify(token, issuer.jwks(), listed, now=NOW)
    with pytest.raises(CredentialError, match="bit 2999991 of the status list is set"):
        _, _, revoked = await issued(id=2_999_991)
        verify(revoked, issuer.jwks(), listed, now=NOW)


async def test_an_algorithm_other_than_rs256_and_eddsa_is_refused() -> None:
    issuer, _, token = await issued()
    header, payload = segments(token)
    p256 = ECKey.generate_key("P-256")
    jwks = {"keys": [*issuer.jwks()["keys"], {**p256.as_dict(private=False), "kid": "p256"}]}
    forged = jose_jwt.encode({**header, "alg": "ES256", "kid": "p256"}, payload, p256)
    with pytest.raises(CredentialError, match="ES256"):
        verify(forged, jwks, now=NOW)


async def test_verify_checks_the_status_list_it_is_given() -> None:
    issuer, _, token = await issued()
    jwks = issuer.jwks()
    clean = issuer.status_list([1, 2, 8], NOW)
    revoked = issuer.status_list([7], NOW)
    verify(token, jwks, clean, now=NOW)
    with pytest.raises(CredentialError, match=r"was revoked \(bit 7 of the status list is set\)"):
        verify(token, jwks, revoked, now=NOW)
    # The status list is a credential of its own: signed, and checked as one.
    with pytest.raises(CredentialError, match="The status list's signature does not verify"):
        verify(token, jwks, tampered_signature(clean), now=NOW)
    other = CredentialIssuer(settings(base_url="https://other.example/ob"))
    with pytest.raises(CredentialError, match="names a key that the JWK Set does not hold"):
        verify(
            token, jwks, CredentialIssuer(settings(signing_key=OLD_RSA_PEM)).status_list([], NOW)
        )
    elsewhere = CredentialIssuer(settings(base_url="https://other.example/ob", signing_key=RSA_PEM))
    assert other.keys.kid == elsewhere.keys.kid
    with pytest.raises(
        CredentialError,
        match=r"status is in the list .*/openbadges/status'; the status list given is 'https://other",
    ):
        verify(token, jwks, elsewhere.status_list([], NOW), now=NOW)
    stranger = CredentialIssuer(settings(issuer=Issuer(id="did:web:stranger", name="S")))
    with pytest.raises(CredentialError, match="status list is issued by 'did:web:stranger'"):
        verify(token, jwks, stranger.status_list([], NOW), now=NOW)
    with pytest.raises(CredentialError, match="The status list is not valid until"):
        verify(token, jwks, issuer.status_list([], NOW + datetime.timedelta(days=1)), now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("credentialStatus"), "has no BitstringStatusListEntry"),
        (lambda p: p["credentialStatus"].update(type="Other"), "has no BitstringStatusListEntry"),
        (lambda p: p["credentialStatus"].update(statusListIndex="-1"), "'-1', not a number"),
        (lambda p: p["credentialStatus"].update(statusListIndex=7), "7, not a number"),
    ],
)
async def test_a_credential_status_that_cannot_be_checked_fails(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    issuer, _, token = await issued()
    with pytest.raises(CredentialError, match=message):
        verify(resigned(token, issuer, change), issuer.jwks(), issuer.status_list([], NOW), now=NOW)


async def test_a_status_list_that_cannot_be_read_fails() -> None:
    issuer, _, token = await issued()
    document = segments(issuer.status_list([], NOW))[1]
    document["credentialSubject"]["encodedList"] = "z"
    broken = issuer.sign({k: v for k, v in document.items() if k not in ("iss", "jti", "nbf")})
    with pytest.raises(CredentialError, match="Cannot read the status list: its encodedList"):
        verify(token, issuer.jwks(), broken, now=NOW)


# Baked PNGs -----------------------------------------------------------------------------------


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(*extra: bytes) -> bytes:
    """A 1x1 PNG, with `extra` chunks after its IHDR."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    image = chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(extra) + image + chunk(b"IEND", b"")


def test_a_credential_baked_into_a_png_comes_back_and_the_picture_is_kept() -> None:
    original = png(chunk(b"tEXt", b"Comment\x00hello"))
    baked = bake_png(original, "a.b.c")
    assert unbake_png(baked) == "a.b.c"
    assert unbake_png(original) is None
    # Every chunk of the original, byte for byte, and the credential's right after IHDR.
    assert baked.replace(chunk(b"iTXt", b"openbadgecredential\x00\x00\x00\x00\x00a.b.c"), b"") == (
        original
    )
    assert baked.index(b"iTXt") < baked.index(b"IDAT")
    again = bake_png(baked, "d.e.f")
    assert unbake_png(again) == "d.e.f" and again.count(b"openbadgecredential") == 1


def test_a_compressed_credential_chunk_is_read() -> None:
    data = b"openbadgecredential\x00\x01\x00en\x00\x00" + zlib.compress(b"x.y.z")
    assert unbake_png(png(chunk(b"iTXt", data))) == "x.y.z"
    unknown = b"openbadgecredential\x00\x01\x07\x00\x00x"
    with pytest.raises(ValueError, match="unknown compression"):
        unbake_png(png(chunk(b"iTXt", unknown)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a", "it does not start with the PNG signature"),
        (png()[:-6], "it ends inside a chunk"),
        (png()[:50], "chunk is cut off"),
        (png()[:-12], "it has no IEND chunk"),
        (png()[:30] + b"\x00" + png()[31:], "the CRC of its b'IHDR' chunk is wrong"),
    ],
)
def test_what_is_not_a_whole_png_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unbake_png(data)
    with pytest.raises(ValueError, match=message):
        bake_png(data, "a.b.c")


def test_bake_png_needs_a_credential() -> None:
    with pytest.raises(ValueError, match="credential_jwt must be a non-empty str"):
        bake_png(png(), "")


# The registry, on every database ---------------------------------------------------------------


class WeekBadge(Badge):
    slug = "week"
    levels = ["Week"]
    events = ["visited"]
    expires_after = datetime.timedelta(days=7)

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


@pytest.fixture
async def badges(registry: BadgeRegistry) -> BadgeRegistry:
    for badge_class in (RankBadge, ThanksBadge, LadderBadge, WeekBadge):
        registry.register(badge_class)

    async def recipient(user_id: str) -> str:
        return f"https://example.com/users/{user_id}"

    await registry.disconnect()
    registry.configure(openbadges=settings(recipient=recipient))
    await registry.connect()
    return registry


async def test_the_registry_issues_and_verifies_a_held_award(badges: BadgeRegistry) -> None:
    held = await badges.grant("ana", "rank", 3)
    assert held is not None
    document = await badges.credential(held.id)
    CREDENTIAL_SCHEMA.validate(document)
    assert document["credentialSubject"]["id"] == "https://example.com/users/ana"
    token = await badges.credential_jwt(held.id)
    assert await badges.verify_credential(token) == document
    assert verify(token, badges.jwks(), await badges.status_list()) == document
    assert badges.achievement("rank", 3) == {
        "@context": document["@context"],
        **document["credentialSubject"]["achievement"],
    }
    assert badges.achievement("ladder")["id"] == f"{BASE_URL}/achievements/ladder/1"
    assert badges.issuer_profile()["id"] == ISSUER.id


async def test_a_revoked_or_replaced_award_no_longer_verifies(badges: BadgeRegistry) -> None:
    rank = await badges.grant("ana", "rank", 1)
    [thanks] = await badges.possibly_award_badge("thanked", user="ana")
    [one] = await badges.possibly_award_badge("climbed", user="ana", level=1)
    kept = await badges.grant("bob", "rank", 1)
    assert rank is not None and kept is not None
    tokens = {a.id: await badges.credential_jwt(a.id) for a in (rank, thanks, one, kept)}
    await badges.revoke("ana", "rank")  # Its row deleted.
    await badges.revoke("ana", "thanks")  # A `multiple` badge's row, kept marked revoked.
    await badges.possibly_award_badge("climbed", user="ana", level=2)  # Replaces level 1.
    listed = await badges.status_list()
    for award_id, how in ((rank.id, "revoked"), (thanks.id, "revoked"), (one.id, "replaced")):
        with pytest.raises(CredentialError, match=f"its award was {how}"):
            await badges.verify_credential(tokens[award_id])
        with pytest.raises(CredentialError, match=f"bit {award_id} of the status list is set"):
            verify(tokens[award_id], badges.jwks(), listed)
        with pytest.raises(CredentialError, match=f"Award {award_id} was {how}: a credential"):
            await badges.credential(award_id)
    verify(tokens[kept.id], badges.jwks(), listed)
    assert await badges.verify_credential(tokens[kept.id])


async def test_an_expired_award_has_no_credential(badges: BadgeRegistry) -> None:
    start = datetime.datetime.now(UTC) - datetime.timedelta(days=8)
    moved = await badges.grant("ana", "week", force_timestamp=start)
    waiting = await badges.grant("bob", "week", force_timestamp=start)
    assert moved is not None and waiting is not None
    token = CredentialIssuer(badges.settings.openbadges or settings()).sign(
        await CredentialIssuer(settings()).credential(WeekBadge(), waiting)
    )
    # Not moved to the history yet: expired all the same.
    with pytest.raises(CredentialError, match=f"Award {waiting.id} was expired"):
        await badges.credential(waiting.id)
    with pytest.raises(CredentialError, match="expired at"):
        await badges.verify_credential(token)
    assert await badges.expire_awards() == 2
    with pytest.raises(CredentialError, match=f"Award {moved.id} was expired"):
        await badges.credential(moved.id)


async def test_the_registry_refuses_what_it_cannot_issue(badges: BadgeRegistry) -> None:
    with pytest.raises(CredentialError, match="No award has the id 999: it has no credential"):
        await badges.credential(999)
    for bad in (0, True, "1"):
        with pytest.raises(ValueError, match="award_id must be a whole number above 0"):
            await badges.credential(bad)  # type: ignore[arg-type]
    held = await badges.grant("ana", "rank", 1)
    assert held is not None
    del badges._badges["rank"]  # A badge no longer registered.
    with pytest.raises(CredentialError, match="badge 'rank' level 1, which is not registered"):
        await badges.credential(held.id)
    foreign = CredentialIssuer(settings(base_url="https://other.example/ob"))
    token = foreign.sign(await foreign.credential(RankBadge(), held))
    with pytest.raises(CredentialError, match="is not one of this issuer's"):
        await badges.verify_credential(token)
    gone = CredentialIssuer(settings()).sign(
        await CredentialIssuer(settings()).credential(RankBadge(), award(id=999))
    )
    with pytest.raises(CredentialError, match="its award no longer exists"):
        await badges.verify_credential(gone)


async def test_open_badges_need_their_setting(registry: BadgeRegistry) -> None:
    for call in (registry.jwks, registry.issuer_profile, lambda: registry.achievement("rank")):
        with pytest.raises(ConfigurationError, match=r"configure\(openbadges="):
            call()
    with pytest.raises(ConfigurationError, match="openbadges must be None or an abadges"):
        BadgeRegistry().configure(openbadges={"issuer": "x"})


async def test_the_eddsa_warning_of_joserfc_is_only_silenced_for_eddsa() -> None:
    key = OKPKey.import_key(ED25519_PEM)
    with allowing_eddsa():
        jose_jwt.encode({"alg": "EdDSA"}, {}, key, algorithms=["EdDSA"])
    with pytest.raises(Warning, match="EdDSA is deprecated"):
        jose_jwt.encode({"alg": "EdDSA"}, {}, key, algorithms=["EdDSA"])
