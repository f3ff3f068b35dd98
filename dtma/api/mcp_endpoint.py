"""`/v1/toolboxes/{id}/mcp`: a toolbox's tools, prompts and resources as one MCP server over
streamable HTTP.

The protocol is the official SDK's: a lowlevel `Server` with tools/list and tools/call handlers
(and the prompts/resources ones of api/mcp_catalog.py),
served by its `StreamableHTTPSessionManager` (both eras: the `initialize` handshake with
sessions, and the stateless 2026-07-28 revision), bridged to aiohttp by `api/asgi.py`. One
endpoint per toolbox, made on its first request, so sessions belong to one toolbox. The engine
is reached only through the `ToolGateway` port. A background task per endpoint holds the
manager's task group and tells the sessions it has seen `notifications/tools/list_changed` when
the offered tool set changes (checked every `WATCH_INTERVAL_S`); it ends, with its sessions, when
the toolbox is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

import mcp_types as types
import structlog
from aiohttp import web
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

from dtma import __version__
from dtma.api.asgi import serve_asgi
from dtma.api.mcp_catalog import catalog_handlers, without_unoffered
from dtma.api.params import path_label
from dtma.engine.gateway import ToolNotFound
from dtma.engine.gateway_catalog import CATALOG, McpGateway
from dtma.errors import DockerUnavailable, NotFound, ServerUnavailable

log = structlog.get_logger(__name__)

WATCH_INTERVAL_S = 1.0
NOTIFY_TIMEOUT_S = 2.0
OFFERS_TIMEOUT_S = 2.0
# JSON-RPC server-error range: the server behind this tool cannot answer now; retry.
SERVER_UNAVAILABLE = -32003
MCP_ENDPOINTS: web.AppKey[McpEndpoints] = web.AppKey("mcp_endpoints")


class _ToolboxServer(Server[Any]):
    """The SDK's lowlevel server, announcing `tools.listChanged` on the handshake era, and
    prompts/resources only while a serving server offers them (`offered`)."""

    offered: frozenset[str] = frozenset(CATALOG)

    def get_capabilities(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        caps = super().get_capabilities(
            notification_options,
            experimental_capabilities,
            extensions,
            protocol_version=protocol_version,
        )
        return without_unoffered(caps, self.offered)

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class ToolboxEndpoint:
    """One toolbox's MCP server and session manager. `start()` once, `close()` idempotent."""

    def __init__(self, toolbox_id: str, gateway: McpGateway) -> None:
        self.toolbox_id = toolbox_id
        self._gateway = gateway
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self.server = _ToolboxServer(
            f"dtma-{toolbox_id}",
            version=__version__,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            **catalog_handlers(gateway, toolbox_id, self._remember),
        )
        self.manager = StreamableHTTPSessionManager(self.server)
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._refresh_offered()
        self._task = asyncio.create_task(self._hold(), name=f"mcp-endpoint-{self.toolbox_id}")
        await self._ready.wait()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _hold(self) -> None:
        try:
            async with self.manager.run():
                self._ready.set()
                await self._watch()
        finally:
            self._ready.set()

    async def _watch(self) -> None:
        last = self._gateway.signature(self.toolbox_id)
        while self._gateway.knows(self.toolbox_id):
            await asyncio.sleep(WATCH_INTERVAL_S)
            await self._refresh_offered()
            now = self._gateway.signature(self.toolbox_id)
            if now != last:
                last = now
                await self._notify_list_changed()

    async def _refresh_offered(self) -> None:
        """Which of prompts/resources the serving servers offer, for the next handshake. Bounded:
        a server slow to connect keeps the last answer (at first: both offered)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(OFFERS_TIMEOUT_S):
                self.server.offered = await self._gateway.offers(self.toolbox_id)

    async def _notify_list_changed(self) -> None:
        for session in list(self._sessions):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(NOTIFY_TIMEOUT_S):
                    await session.send_tool_list_changed()

    def _remember(self, ctx: Any) -> None:
        """Note the client's connection (weakly: it lives as long as its MCP session). The SDK
        hands handlers a per-request ServerSession and exposes no public way to the connection
        behind it, so this reads its one private attribute; without it, no notifications."""
        connection = getattr(ctx.session, "_connection", None)
        if connection is not None and hasattr(connection, "send_tool_list_changed"):
            with contextlib.suppress(TypeError):
                self._sessions.add(connection)

    async def _list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self._remember(ctx)
        try:
            tools = await self._gateway.tools(self.toolbox_id)
        except NotFound as exc:
            raise MCPError(types.INVALID_REQUEST, exc.message) from None
        return types.ListToolsResult(
            tools=[types.Tool.model_validate({**t.definition, "name": t.name}) for t in tools]
        )

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> Any:
        self._remember(ctx)
        try:
            result = await self._gateway.call(self.toolbox_id, params.name, params.arguments)
        except ToolNotFound as exc:
            raise MCPError(types.INVALID_PARAMS, exc.message) from None
        except ServerUnavailable as exc:
            raise MCPError(
                SERVER_UNAVAILABLE, exc.message, {"retryable": True, "retryAfterMs": 500}
            ) from None
        except NotFound as exc:
            raise MCPError(types.INVALID_REQUEST, exc.message) from None
        return types.CallToolResult.model_validate(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class McpEndpoints:
    """The endpoints by toolbox id, made on first use and replaced once their toolbox is gone."""

    def __init__(self, gateway: McpGateway) -> None:
        self._gateway = gateway
        self._endpoints: dict[str, ToolboxEndpoint] = {}
        self._lock = asyncio.Lock()

    async def get(self, toolbox_id: str) -> ToolboxEndpoint:
        endpoint = self._endpoints.get(toolbox_id)
        if endpoint is not None and endpoint.alive:
            return endpoint
        async with self._lock:
            endpoint = self._endpoints.get(toolbox_id)
            if endpoint is None or not endpoint.alive:
                endpoint = ToolboxEndpoint(toolbox_id, self._gateway)
                await endpoint.start()
                self._endpoints[toolbox_id] = endpoint
            return endpoint

    async def close(self) -> None:
        for endpoint in list(self._endpoints.values()):
            await endpoint.close()
        self._endpoints.clear()


def add_mcp_routes(app: web.Application, gateway: McpGateway, started: Any) -> None:
    """Mount the endpoint. `started()` is False while the agent is still recovering."""
    endpoints = McpEndpoints(gateway)
    app[MCP_ENDPOINTS] = endpoints

    async def close(_: web.Application) -> None:
        await endpoints.close()

    app.on_shutdown.append(close)

    async def handle(request: web.Request) -> web.StreamResponse:
        toolbox_id = path_label(request, "id")
        if not started():
            raise DockerUnavailable("the agent is still starting; retry shortly")
        if not gateway.knows(toolbox_id):
            raise NotFound(f"toolbox {toolbox_id} not found")
        endpoint = await endpoints.get(toolbox_id)
        return await serve_asgi(endpoint.manager.handle_request, request)

    path = "/v1/toolboxes/{id}/mcp"
    app.router.add_route("POST", path, handle)
    app.router.add_route("GET", path, handle)
    app.router.add_route("DELETE", path, handle)
