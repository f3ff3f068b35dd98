"""`/v1/toolboxes/{id}/mcp`: a toolbox's tools, prompts and resources as one MCP server over
streamable HTTP.

This module is the aiohttp wiring only: the route, the Origin check, the stream tracking that
revocation needs, and the caller the middleware found, handed to the toolbox's endpoint
(dtma/gateway/: the registry in gateway/registry.py, the endpoint in gateway/endpoint.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dtma.api.disconnects import cancel_on_disconnect
from dtma.api.errors import error_response
from dtma.api.middleware import CALLER, PRINCIPAL
from dtma.api.open_streams import OpenStreams, held_until_expiry
from dtma.api.origin import OriginPolicy
from dtma.api.params import path_label
from dtma.domain.access import AGENT_PRINCIPAL
from dtma.errors import DockerUnavailable, NotFound
from dtma.gateway.call_journal import CallJournal
from dtma.gateway.catalog import McpGateway
from dtma.gateway.registry import McpEndpoints

MCP_ENDPOINTS: web.AppKey[McpEndpoints] = web.AppKey("mcp_endpoints")


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
        return await endpoint.serve(
            request, request.get(PRINCIPAL, AGENT_PRINCIPAL), request.get(CALLER)
        )

    async def terminate(request: web.Request) -> web.StreamResponse:
        """A DELETE: the SDK ends the session whole, even if its client has gone meanwhile."""
        return await handle(request)

    # A client that closes its connection cancels its POST (how a 2026-07-28 client cancels a
    # call) and ends its GET stream: aiohttp cancels the handler (api/disconnects.py).
    path = "/v1/toolboxes/{id}/mcp"
    app.router.add_route("POST", path, cancel_on_disconnect(handle))
    app.router.add_route("GET", path, cancel_on_disconnect(stream))
    app.router.add_route("DELETE", path, terminate)
