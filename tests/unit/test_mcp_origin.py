"""The MCP endpoint refuses browser requests from foreign origins (DNS rebinding), and lets
through clients that send no Origin, loopback origins, and those the operator allowed."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dtma.api.mcp_endpoint import add_mcp_routes
from dtma.api.origin import OriginPolicy
from dtma.config import load_settings
from tests.fakes_gateway import OneToolGateway
from tests.mcp_stream import INITIALIZE


@pytest.mark.parametrize(
    ("origin", "allowed", "permitted"),
    [
        (None, (), True),  # not a browser
        ("http://localhost:8750", (), True),
        ("http://127.0.0.1:9", (), True),
        ("http://[::1]:8750", (), True),
        ("http://evil.example.com", (), False),
        ("https://localhost.evil.example.com", (), False),
        ("null", (), False),
        ("garbage", (), False),
        ("https://console.example.com", ("https://console.example.com",), True),
        ("https://console.example.com/", ("https://console.example.com",), True),
        ("http://console.example.com", ("https://console.example.com",), False),
        ("https://console.example.com:8443", ("console.example.com",), True),
        ("https://other.example.com", ("console.example.com",), False),
    ],
)
def test_origin_policy(origin: str | None, allowed: tuple[str, ...], permitted: bool) -> None:
    assert OriginPolicy(allowed).permits(origin) is permitted


async def test_a_foreign_origin_gets_403_before_the_protocol() -> None:
    app = web.Application()
    add_mcp_routes(app, OneToolGateway(), started=lambda: True)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        path = "/v1/toolboxes/tb/mcp"
        evil = await client.post(
            path,
            data=json.dumps(INITIALIZE),
            headers={**headers, "Host": "evil.example.com", "Origin": "http://evil.example.com"},
        )
        assert evil.status == 403
        body = await evil.json()
        assert body["error"]["code"] == "forbidden"
        assert "DTMA_MCP_ALLOWED_ORIGINS" in body["error"]["message"]
        local = await client.post(
            path,
            data=json.dumps(INITIALIZE),
            headers={**headers, "Origin": f"http://localhost:{client.port}"},
        )
        assert local.status == 200
    finally:
        await client.close()


def test_the_allowed_origins_setting_is_a_comma_separated_list() -> None:
    settings = load_settings(
        {"DTMA_MCP_ALLOWED_ORIGINS": "https://a.example.com, b.example.com"}, None
    )
    assert settings.mcp_allowed_origins == ("https://a.example.com", "b.example.com")
