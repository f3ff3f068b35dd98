"""gateway/oauth.py's key handling with a fake JsonFetcher (tests/fakes.py): discovery, the
cache, refresh on an unknown kid and its rate limit, an issuer that is down. Tokens are real
RS256 JWTs (PyJWT, cryptography); the real issuer is in tests/e2e/test_gateway_oauth.py."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from dtma.domain.oauth import OAuthIssuer
from dtma.errors import IssuerUnavailable, ScopeRefused, TokenRefused
from dtma.gateway.oauth import KEYS_MAX_AGE_S, REFRESH_MIN_S, VERIFIED_TTL_S, JwtVerifier
from tests.fakes import FakeJsonFetcher, ManualClock
from tests.jwt_keys import BASE, ISSUER, Key

OIDC = f"{ISSUER}/.well-known/openid-configuration"
RFC8414 = "https://idp.example/.well-known/oauth-authorization-server/realms/r"
JWKS = "https://idp.example/keys"


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    """Made once, outside the event loop (an RSA key takes long enough to block it)."""
    return {kid: Key(kid) for kid in ("k1", "k2", "k3", "made-up")}


@pytest.fixture
def k1(keys: dict[str, Key]) -> Key:
    return keys["k1"]


def setup(
    keys: list[Key],
    documents: dict[str, Any] | None = None,
    wall: ManualClock | None = None,
    **issuer: Any,
) -> tuple[JwtVerifier, FakeJsonFetcher, ManualClock]:
    published = keys  # the list is read at every GET: tests append to it to rotate
    fetcher = FakeJsonFetcher(
        documents
        if documents is not None
        else {
            OIDC: {"issuer": ISSUER, "jwks_uri": JWKS},
            JWKS: lambda: {"keys": [k.jwk() for k in published]},
        }
    )
    clock = ManualClock()
    verifier = JwtVerifier(
        [OAuthIssuer(issuer=ISSUER, **issuer)], BASE, fetcher, clock, wall or ManualClock()
    )
    return verifier, fetcher, clock


async def test_a_token_verifies_against_discovered_keys(k1: Key) -> None:
    verifier, fetcher, _ = setup([k1])
    caller = await verifier.verify(k1.sign(), "abc")
    assert (caller.issuer, caller.subject) == (ISSUER, "alice")
    await verifier.verify(k1.sign(), "abc")
    assert fetcher.gets == {OIDC: 1, JWKS: 1}  # cached


async def test_rfc8414_metadata_when_there_is_no_openid_discovery(k1: Key) -> None:
    docs = {RFC8414: {"issuer": ISSUER, "jwks_uri": JWKS}, JWKS: {"keys": [k1.jwk()]}}
    verifier, _, _ = setup([k1], docs)
    await verifier.verify(k1.sign(), "abc")


async def test_metadata_for_another_issuer_is_not_trusted(k1: Key) -> None:
    docs = {OIDC: {"issuer": "https://evil.example", "jwks_uri": JWKS}, JWKS: {"keys": []}}
    verifier, _, _ = setup([k1], docs)
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(k1.sign(), "abc")


async def test_a_jwks_uri_in_the_clear_is_not_followed(k1: Key) -> None:
    docs = {OIDC: {"issuer": ISSUER, "jwks_uri": "http://idp.example/keys"}}
    verifier, fetcher, _ = setup([k1], docs)
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(k1.sign(), "abc")
    assert "http://idp.example/keys" not in fetcher.gets


async def test_a_symmetric_key_in_the_set_is_never_used(k1: Key) -> None:
    oct_key = {"kty": "oct", "kid": "k1", "k": "c2VjcmV0", "alg": "HS256"}
    docs = {OIDC: {"issuer": ISSUER, "jwks_uri": JWKS}, JWKS: {"keys": [oct_key]}}
    verifier, _, _ = setup([k1], docs)
    with pytest.raises(TokenRefused, match="unknown signing key"):
        await verifier.verify(k1.sign(), "abc")


async def test_an_unknown_kid_refreshes_at_most_once_per_interval(
    k1: Key, keys: dict[str, Key]
) -> None:
    published = [k1]
    verifier, fetcher, clock = setup(published)
    await verifier.verify(k1.sign(), "abc")
    k2 = keys["k2"]
    published.append(k2)  # rotated at the issuer
    clock.advance(REFRESH_MIN_S + 1)
    await verifier.verify(k2.sign(), "abc")  # fetched again on the unknown kid
    assert fetcher.gets[JWKS] == 2
    for _ in range(5):  # made-up kids within the interval cost no fetch
        with pytest.raises(TokenRefused, match="unknown signing key"):
            await verifier.verify(keys["made-up"].sign(), "abc")
    assert fetcher.gets[JWKS] == 2
    k3 = keys["k3"]
    published.append(k3)
    with pytest.raises(TokenRefused, match="unknown signing key"):
        await verifier.verify(k3.sign(), "abc")  # rate-limited: not fetched yet
    clock.advance(REFRESH_MIN_S)
    await verifier.verify(k3.sign(), "abc")
    assert fetcher.gets[JWKS] == 3


async def test_cached_keys_outlive_an_issuer_outage_and_expire_into_a_refetch(k1: Key) -> None:
    verifier, fetcher, clock = setup([k1])
    await verifier.verify(k1.sign(), "abc")
    fetcher.down = True
    clock.advance(KEYS_MAX_AGE_S + 1)
    await verifier.verify(k1.sign(), "abc")  # stale, the refetch fails: the cache serves
    assert fetcher.gets[JWKS] == 2
    fetcher.down = False
    clock.advance(KEYS_MAX_AGE_S + 1)
    await verifier.verify(k1.sign(), "abc")
    assert fetcher.gets[JWKS] == 3


async def test_an_issuer_down_from_the_start_is_503_and_not_hammered(k1: Key) -> None:
    verifier, fetcher, clock = setup([k1])
    fetcher.down = True
    for _ in range(3):
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(k1.sign(), "abc")
    assert sum(fetcher.gets.values()) == 2  # OIDC and RFC 8414 once each
    fetcher.down = False
    clock.advance(REFRESH_MIN_S)
    await verifier.verify(k1.sign(), "abc")


async def test_audience_scope_and_claim_settings(k1: Key) -> None:
    verifier, _, _ = setup([k1])
    with pytest.raises(TokenRefused, match="not issued for this resource"):
        await verifier.verify(k1.sign("abc"), "xyz")  # aud is abc's endpoint
    with pytest.raises(ScopeRefused):
        await verifier.verify(k1.sign("xyz", scope="toolbox:abc"), "xyz")
    verifier, _, _ = setup([k1], audience="api://mcp", toolbox_claim="toolboxes")
    await verifier.verify(k1.sign(aud="api://mcp", scope="", toolboxes=["abc"]), "abc")
    with pytest.raises(ScopeRefused):
        await verifier.verify(k1.sign(aud="api://mcp", toolboxes=["xyz"]), "abc")


async def test_required_claims_and_the_issuers_algorithms(k1: Key) -> None:
    verifier, _, _ = setup([k1], algorithms=["ES256"])
    with pytest.raises(TokenRefused, match="algorithm not accepted"):
        await verifier.verify(k1.sign(), "abc")
    verifier, _, _ = setup([k1])
    token = jwt.encode(
        {"iss": ISSUER, "aud": f"{BASE}/v1/toolboxes/abc/mcp", "sub": "a", "scope": "toolbox:abc"},
        k1.private,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    with pytest.raises(TokenRefused, match="lacks a required claim"):
        await verifier.verify(token, "abc")  # no exp, no iat
    with pytest.raises(TokenRefused, match="not valid yet"):
        await verifier.verify(k1.sign(nbf=int(time.time()) + 120), "abc")


async def test_a_verified_token_is_taken_again_for_a_minute_at_most(
    k1: Key, keys: dict[str, Key]
) -> None:
    published = [k1]
    wall = ManualClock()
    verifier, fetcher, clock = setup(published, wall=wall)
    token = k1.sign()
    await verifier.verify(token, "abc")
    with pytest.raises(TokenRefused, match="not issued for this resource"):
        await verifier.verify(token, "xyz")  # cached per toolbox: checked afresh
    published[:] = [keys["k2"]]  # k1 withdrawn at the issuer
    clock.advance(KEYS_MAX_AGE_S + 1)
    wall.advance(VERIFIED_TTL_S - 1)
    await verifier.verify(token, "abc")  # from the cache: no parse, no fetch
    assert fetcher.gets[JWKS] == 1
    wall.advance(2)
    with pytest.raises(TokenRefused, match="unknown signing key"):
        await verifier.verify(token, "abc")
