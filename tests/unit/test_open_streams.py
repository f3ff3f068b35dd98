"""Revocation reaches the GET streams a client token holds (api/open_streams.py), on a real
aiohttp server with the endpoint's routes and the SDK's session manager: the revoked token's
stream is cut and forgotten once its handler ends, another token's stream and the API token's
(never tracked) stay open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dtma.api.mcp_endpoint import add_mcp_routes
from dtma.api.middleware import PRINCIPAL
from dtma.api.open_streams import OpenStreams
from dtma.domain.access import AGENT_PRINCIPAL
from tests.fakes_gateway import OneToolGateway
from tests.unit.test_mcp_exchange import agent_like_server

ACCEPT = "application/json, text/event-stream"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


@asynccontextmanager
async def get_stream(
    http: aiohttp.ClientSession, url: str, who: str
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A handshake-era session of `who` (the principal the test middleware sets) and its GET
    stream, open."""
    headers = {"Accept": ACCEPT, "X-Who": who}
    async with http.post(url, json=INITIALIZE, headers=headers) as answer:
        assert answer.status == 200
        await answer.read()
        session = {"Mcp-Session-Id": answer.headers["mcp-session-id"]}
    session["MCP-Protocol-Version"] = "2025-11-25"
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    async with http.post(url, json=done, headers={**headers, **session}) as answer:
        assert answer.status == 202
    stream_headers = {**headers, **session, "Accept": "text/event-stream"}
    async with http.get(url, headers=stream_headers) as stream:
        assert stream.status == 200
        yield stream


async def ends(stream: aiohttp.ClientResponse, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            await stream.content.read()
    except TimeoutError:
        return False
    except aiohttp.ClientError:
        return True
    return True


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, OpenStreams]]:
    @web.middleware
    async def who(request: web.Request, handler: Any) -> web.StreamResponse:
        request[PRINCIPAL] = request.headers.get("X-Who", AGENT_PRINCIPAL)
        return await handler(request)

    streams = OpenStreams()
    app = web.Application(middlewares=[who])
    add_mcp_routes(app, OneToolGateway(), started=lambda: True, streams=streams)
    async with agent_like_server(app) as url:
        yield url, streams


async def test_a_cut_closes_only_the_revoked_tokens_streams(
    served: tuple[str, OpenStreams],
) -> None:
    url, streams = served
    async with (
        aiohttp.ClientSession() as http,
        get_stream(http, url, "tok-revoked") as revoked,
        get_stream(http, url, "tok-kept") as kept,
        get_stream(http, url, AGENT_PRINCIPAL) as operator,
    ):
        assert len(streams) == 2  # the API token's stream is not tracked
        assert streams.cut({"tok-revoked", "tok-unknown"}) == 1
        assert await ends(revoked, within=5)
        assert not await ends(kept, within=0.5)
        assert not await ends(operator, within=0.1)
        for _ in range(50):  # the handler notices within DISCONNECT_POLL_S and forgets it
            if len(streams) == 1:
                break
            await asyncio.sleep(0.1)
        assert len(streams) == 1
        assert streams.cut({"tok-revoked"}) == 0
    for _ in range(50):  # every stream's handler has ended: nothing is left behind
        if len(streams) == 0:
            break
        await asyncio.sleep(0.1)
    assert len(streams) == 0
