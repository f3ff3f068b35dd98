"""The auth middleware and the RFC 9728 route in-process, with a JwtVerifier over a fake
issuer (tests/fakes.py FakeJsonFetcher): which challenge each 401 carries, 403 with
insufficient_scope, 503 while the issuer's keys cannot be had, JWTs kept off the control API,
and the metadata route's answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dtma.api.app import create_app
from dtma.domain.oauth import OAuthIssuer
from dtma.gateway.oauth import JwtVerifier
from tests.fakes import FakeJsonFetcher, StaticReadiness
from tests.jwt_keys import BASE, ISSUER, Key

TOKEN = "t" * 32
JWKS = "https://idp.example/keys"
META = f"{BASE}/.well-known/oauth-protected-resource/v1/toolboxes/abc/mcp"
Make = Callable[..., Coroutine[Any, Any, TestClient]]


@pytest.fixture(scope="module")
def key() -> Key:
    return Key("k1")


@pytest.fixture
async def client_for(key: Key) -> AsyncIterator[Make]:
    clients: list[TestClient] = []

    async def make(issuers: bool = True, down: bool = False) -> TestClient:
        fetcher = FakeJsonFetcher(
            {
                f"{ISSUER}/.well-known/openid-configuration": {"issuer": ISSUER, "jwks_uri": JWKS},
                JWKS: {"keys": [key.jwk()]},
            }
        )
        fetcher.down = down
        configured = [OAuthIssuer(issuer=ISSUER)] if issuers else []
        oauth = JwtVerifier(configured, BASE, fetcher)
        app = create_app(token=TOKEN, readiness=StaticReadiness(), oauth=oauth)
        c = TestClient(TestServer(app))
        await c.start_server()
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_401s_on_an_mcp_endpoint_point_at_its_metadata(client_for: Make) -> None:
    c = await client_for()
    resp = await c.post("/v1/toolboxes/abc/mcp")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{META}"'
    resp = await c.post("/v1/toolboxes/abc/mcp", headers=bearer("nope"))
    assert resp.headers["WWW-Authenticate"] == (
        f'Bearer resource_metadata="{META}", error="invalid_token"'
    )
    for path in ("/v1/agent", "/v1/toolboxes/Bad_Id/mcp"):
        resp = await c.get(path)
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="dtma"', path


async def test_a_valid_jwt_passes_on_its_endpoint_only(client_for: Make, key: Key) -> None:
    c = await client_for()
    resp = await c.post("/v1/toolboxes/abc/mcp", headers=bearer(key.sign("abc")))
    assert resp.status == 404  # past auth: this app has no MCP routes
    assert (await c.get("/v1/agent", headers=bearer(key.sign("abc")))).status == 401
    resp = await c.post("/v1/toolboxes/xyz/mcp", headers=bearer(key.sign("xyz", scope="x")))
    assert resp.status == 403
    assert 'error="insufficient_scope", scope="toolbox:xyz"' in resp.headers["WWW-Authenticate"]


async def test_an_unreachable_issuer_is_503_not_401(client_for: Make, key: Key) -> None:
    c = await client_for(down=True)
    resp = await c.post("/v1/toolboxes/abc/mcp", headers=bearer(key.sign("abc")))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    assert (await resp.json())["error"]["code"] == "issuer_unavailable"


async def test_the_metadata_route(client_for: Make) -> None:
    c = await client_for()
    resp = await c.get("/.well-known/oauth-protected-resource/v1/toolboxes/abc/mcp")
    assert resp.status == 200
    assert (await resp.json())["authorization_servers"] == [ISSUER]
    resp = await c.get("/.well-known/oauth-protected-resource/v1/toolboxes/Bad_Id/mcp")
    assert resp.status == 404
    off = await client_for(issuers=False)
    resp = await off.get("/.well-known/oauth-protected-resource/v1/toolboxes/abc/mcp")
    assert resp.status == 404
    resp = await off.post("/v1/toolboxes/abc/mcp")
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="dtma"'
