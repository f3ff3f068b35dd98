"""`/v1/toolboxes/{id}/mcp`: a toolbox's tools, prompts and resources as one MCP server over
streamable HTTP.

This module is the route and the endpoints' registry only: one endpoint per toolbox, made on its
first request (api/mcp_server.py: the official SDK's server), so sessions belong to one toolbox.
The engine is reached only through the `McpGateway` port. The SDK's server side is imported on
the first request to any endpoint, not at start: an agent whose endpoints are never used does
not pay for it (docs/benchmarks.md, "Idle agent").
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dtma import lazy_import
from dtma.api.errors import error_response
from dtma.api.mcp_caller import held_until_expiry
from dtma.api.middleware import CALLER, PRINCIPAL
from dtma.api.open_streams import OpenStreams
from dtma.api.origin import OriginPolicy
from dtma.api.params import path_label
from dtma.domain.access import AGENT_PRINCIPAL
from dtma.engine.call_journal import CallJournal
from dtma.engine.gateway_catalog import McpGateway
from dtma.errors import DockerUnavailable, NotFound

if TYPE_CHECKING:
    from dtma.api.mcp_server import ToolboxEndpoint


MCP_ENDPOINTS: web.AppKey[McpEndpoints] = web.AppKey("mcp_endpoints")


class McpEndpoints:
    """The endpoints by toolbox id, made on first use and replaced once their toolbox is gone."""

    def __init__(self, gateway: McpGateway, audit: CallJournal | None = None) -> None:
        self._gateway = gateway
        self._audit = audit
        self._endpoints: dict[str, ToolboxEndpoint] = {}
        self._lock = asyncio.Lock()

    async def get(self, toolbox_id: str) -> ToolboxEndpoint:
        endpoint = self._endpoints.get(toolbox_id)
        if endpoint is not None and endpoint.alive:
            return endpoint
        async with self._lock:
            endpoint = self._endpoints.get(toolbox_id)
            if endpoint is None or not endpoint.alive:
                # Deferred: the SDK's server side (api/mcp_server.py) loads with the first
                # endpoint, not with the agent, and in a thread (dtma/lazy_import.py).
                await lazy_import.load(lazy_import.MCP_SERVER)
                from dtma.api.mcp_server import ToolboxEndpoint

                endpoint = ToolboxEndpoint(toolbox_id, self._gateway, self._audit)
                await endpoint.start()
                self._endpoints[toolbox_id] = endpoint
            return endpoint

    async def close(self) -> None:
        for endpoint in list(self._endpoints.values()):
            await endpoint.close()
        self._endpoints.clear()


def add_mcp_routes(
    app: web.Application,
    gateway: McpGateway,
    started: Any,
    audit: CallJournal | None = None,
    origins: OriginPolicy | None = None,
    streams: OpenStreams | None = None,
) -> None:
    """Mount the endpoint. `started()` is False while the agent is still recovering; `audit`
    journals every tools/call; `origins` says which browser origins may call (api/origin.py;
    loopback ones only by default); `streams` tracks the GET streams client tokens hold, for
    revocation to close them (api/open_streams.py)."""
    origins = origins or OriginPolicy()
    streams = OpenStreams() if streams is None else streams  # (an empty one is falsy)
    endpoints = McpEndpoints(gateway, audit)
    app[MCP_ENDPOINTS] = endpoints

    async def close(_: web.Application) -> None:
        await endpoints.close()

    app.on_shutdown.append(close)

    async def stream(request: web.Request) -> web.StreamResponse:
        """A GET: a stream that lasts, tracked (closed on revocation, or as its JWT expires)."""
        principal = request.get(PRINCIPAL, AGENT_PRINCIPAL)
        if principal == AGENT_PRINCIPAL:
            return await handle(request)
        caller = request.get(CALLER)
        held = streams.held if caller is None else held_until_expiry(streams, caller)
        with held(principal, request):  # entered before the first await
            return await handle(request)

    async def handle(request: web.Request) -> web.StreamResponse:
        if not origins.permits(request.headers.get("Origin")):
            return error_response(
                403,
                "forbidden",
                "this Origin may not call the MCP endpoint (DNS-rebinding protection); an "
                "operator may allow it with DTMA_MCP_ALLOWED_ORIGINS",
            )
        toolbox_id = path_label(request, "id")
        if not started():
            raise DockerUnavailable("the agent is still starting; retry shortly")
        if not gateway.knows(toolbox_id):
            raise NotFound(f"toolbox {toolbox_id} not found")
        endpoint = await endpoints.get(toolbox_id)
        return await endpoint.serve(request)

    path = "/v1/toolboxes/{id}/mcp"
    app.router.add_route("POST", path, handle)
    app.router.add_route("GET", path, stream)
    app.router.add_route("DELETE", path, handle)
