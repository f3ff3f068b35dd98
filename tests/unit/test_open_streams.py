"""Revocation reaches the GET streams a client token holds (api/open_streams.py), on a real
aiohttp server with the endpoint's routes and the SDK's session manager: the revoked token's
stream is cut and forgotten once its handler ends, another token's stream and the API token's
(never tracked) stay open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from dtma.api.mcp_endpoint import add_mcp_routes
from dtma.api.middleware import PRINCIPAL
from dtma.api.open_streams import OpenStreams
from dtma.domain.access import AGENT_PRINCIPAL
from tests.fakes_gateway import OneToolGateway
from tests.mcp_stream import get_stream, stream_ends
from tests.unit.test_mcp_exchange import agent_like_server


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
        get_stream(url, {"X-Who": "tok-revoked"}) as revoked,
        get_stream(url, {"X-Who": "tok-kept"}) as kept,
        get_stream(url, {"X-Who": AGENT_PRINCIPAL}) as operator,
    ):
        assert len(streams) == 2  # the API token's stream is not tracked
        assert streams.cut({"tok-revoked", "tok-unknown"}) == 1
        assert await stream_ends(revoked, within=5)
        assert len(streams) == 1  # the kept stream's handler runs on
        assert streams.cut({"tok-revoked"}) == 0
        # (A read given up by its timeout closes the client's connection: these come last.)
        assert not await stream_ends(kept, within=0.5)
        assert not await stream_ends(operator, within=0.1)
    for _ in range(50):  # every stream's handler has ended: nothing is left behind
        if len(streams) == 0:
            break
        await asyncio.sleep(0.1)
    assert len(streams) == 0
