"""A toolbox's MCP server: the official SDK's lowlevel `Server` with tools/list and tools/call
handlers (and the prompts/resources ones of gateway/catalog_handlers.py), served by its
`StreamableHTTPSessionManager` (both eras: the `initialize` handshake with sessions, and the
stateless 2026-07-28 revision), bridged to aiohttp by `gateway/asgi.py`.

This is the gateway's entry to the SDK's server side (with gateway/exchange.py,
gateway/handshake.py, gateway/catalog_handlers.py, gateway/mcp_errors.py and
dtma/sdk_compat/server.py, which only it imports). gateway/registry.py imports it on a toolbox
endpoint's first request, so an agent whose endpoints are never used never loads the SDK (about
20 MB of RSS: docs/benchmarks.md).

A background task per endpoint holds the manager's task group and tells the sessions it has
seen `notifications/tools/list_changed` when the offered tool set changes, and
`notifications/prompts/list_changed` and `notifications/resources/list_changed` (those it
offers) when the serving servers change (checked every `WATCH_INTERVAL_S`); it ends, with its
sessions, when the toolbox is gone.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from typing import Any

import mcp_types as types
from aiohttp import web
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic_core import to_json

from dtma import __version__
from dtma.cancellation import cancel_and_wait, suppress_failures
from dtma.domain.access import AGENT_PRINCIPAL, ToolCall
from dtma.domain.oauth import JwtCaller
from dtma.engine.supervisor import watch_task
from dtma.gateway import exchange, handshake
from dtma.gateway.asgi import serve_asgi
from dtma.gateway.call_journal import CallJournal
from dtma.gateway.caller import CALLER_SCOPE_KEY, caller_of, may_call, visible
from dtma.gateway.catalog import CATALOG, McpGateway
from dtma.gateway.catalog_handlers import catalog_handlers, without_unoffered
from dtma.gateway.handshake import SessionBook
from dtma.gateway.mcp_errors import journal_outcome, mcp_errors, raise_mcp_error
from dtma.gateway.routing import GatewayTool, ToolDenied, split_name
from dtma.sdk_compat import server as sdk_server
from dtma.sdk_compat.server import OpenTelemetryMiddleware

WATCH_INTERVAL_S = 1.0
NOTIFY_TIMEOUT_S = 2.0
OFFERS_TIMEOUT_S = 2.0
PRINCIPAL_SCOPE_KEY = "dtma.principal"  # the ASGI scope key the handler passes the caller in
MAX_NAME_IN_JOURNAL = 128
_LIST_CHANGED = {
    "tools": "send_tool_list_changed",
    "prompts": "send_prompt_list_changed",
    "resources": "send_resource_list_changed",
}


def _size(value: Any) -> int:
    """Bytes of `value` as JSON, for the call journal: never raises (a string with a lone
    surrogate cannot be encoded; the call is journalled all the same, with size 0)."""
    try:
        return len(to_json(value))
    except (ValueError, TypeError):
        return 0


class _ToolboxServer(Server[Any]):
    """The SDK's lowlevel server, announcing `listChanged` on the handshake era, and
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
        every = NotificationOptions(
            prompts_changed=True, resources_changed=True, tools_changed=True
        )
        return super().create_initialization_options(
            notification_options or every,
            experimental_capabilities,
            extensions,
        )


class ToolboxEndpoint:
    """One toolbox's MCP server and session manager. `start()` once, `close()` idempotent."""

    def __init__(
        self, toolbox_id: str, gateway: McpGateway, audit: CallJournal | None = None
    ) -> None:
        self.toolbox_id = toolbox_id
        self._gateway = gateway
        self._audit = audit
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._schemas: dict[str, dict[str, Any]] = {}
        self._headerless: frozenset[str] = frozenset()  # tools whose schema marks no header
        self._learnt = 0  # listings learnt from, so that waiters on one relist skip their own
        self._relisting = asyncio.Lock()
        self.server = _ToolboxServer(
            f"dtma-{toolbox_id}",
            version=__version__,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            get_tool_input_schema=self._input_schema,
            **catalog_handlers(gateway, toolbox_id, self._remember),
        )
        # The SDK wraps every request in an OpenTelemetry span by default, a no-op unless an
        # exporter is installed, which dtma never does; it cost about 7% of the agent's time
        # per call (bench/gateway_latency.py). The SDK documents dropping it as the opt-out.
        self.sessions = SessionBook()  # the open handshake-era sessions, for the hot path
        self.server.middleware = [
            *(m for m in self.server.middleware if not isinstance(m, OpenTelemetryMiddleware)),
            self.sessions,
        ]
        self.manager = StreamableHTTPSessionManager(self.server)
        self.lifespan_state: Any = None  # the server's, for calls answered by gateway/exchange.py
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._refresh_offered()
        self._task = asyncio.create_task(self._hold(), name=f"mcp-endpoint-{self.toolbox_id}")
        # Not restarted here: the route makes a new endpoint when this one is not alive.
        watch_task(self._task, f"mcp endpoint {self.toolbox_id}", "mcp_endpoint")
        await self._ready.wait()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _hold(self) -> None:
        try:
            async with self.server.lifespan(self.server) as state, self.manager.run():
                self.lifespan_state = state
                self._ready.set()
                await self._watch()
        finally:
            self._ready.set()

    async def _watch(self) -> None:
        tools = self._gateway.signature(self.toolbox_id)
        instances = self._gateway.instances(self.toolbox_id)
        while self._gateway.knows(self.toolbox_id):
            await asyncio.sleep(WATCH_INTERVAL_S)
            offered_before = self.server.offered  # a session may hold what is no longer offered
            await self._refresh_offered()
            changed: list[str] = []
            if (now := self._gateway.signature(self.toolbox_id)) != tools:
                tools = now
                self._learn([])
                changed.append("tools")
            if (serving := self._gateway.instances(self.toolbox_id)) != instances:
                instances = serving
                offered = offered_before | self.server.offered
                changed += [kind for kind in CATALOG if kind in offered]
            if changed:
                await self._notify_list_changed(changed)

    async def _refresh_offered(self) -> None:
        """Which of prompts/resources the serving servers offer, for the next handshake. Bounded:
        a server slow to connect keeps the last answer (at first: both offered)."""
        with suppress_failures():
            async with asyncio.timeout(OFFERS_TIMEOUT_S):
                self.server.offered = await self._gateway.offers(self.toolbox_id)

    async def _notify_list_changed(self, kinds: list[str]) -> None:
        """Tell every session seen that these lists ("tools", "prompts", "resources") changed."""
        for session in list(self._sessions):
            with suppress_failures():
                async with asyncio.timeout(NOTIFY_TIMEOUT_S):
                    for kind in kinds:
                        await getattr(session, _LIST_CHANGED[kind])()

    def _remember(self, ctx: Any) -> None:
        """Note the client's connection (weakly: it lives as long as its MCP session), to tell
        it of list changes."""
        connection = sdk_server.connection_of(ctx)
        if connection is not None:
            self._sessions.add(connection)

    def _learn(self, tools: list[GatewayTool]) -> None:
        """Keep the listed tools' input schemas (see `_input_schema` and `_envelope`)."""
        self._learnt += 1
        self._schemas = {t.name: t.definition.get("inputSchema", {}) for t in tools}
        self._headerless = frozenset(
            name
            for name, schema in self._schemas.items()
            if exchange.PARAM_HEADER_KEY not in json.dumps(schema)
        )

    async def _relearn(self) -> None:
        """List the tools again for their schemas (`_learn`); best effort: a failure keeps the
        last ones (bounded by the servers' listing timeout, LIST_TIMEOUT_S). One at a time:
        callers that waited for a listing under way take its result instead of listing again."""
        seen = self._learnt
        async with self._relisting:
            if self._learnt != seen:
                return
            with suppress_failures():
                self._learn(await self._gateway.tools(self.toolbox_id))

    def _unlearnt(self, tool: str | None) -> bool:
        """Whether `tool` (a 2026-07-28 call's) is offered but its schema not known yet. Only an
        offered name (the probes' names, no I/O) may cost a listing: a client naming tools that
        do not exist, or none, cannot make the endpoint list the servers' tools per request."""
        if not tool or tool in self._schemas:
            return False
        return tool in self._gateway.signature(self.toolbox_id)

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        """The SDK checks a 2026-07-28 call's `Mcp-Param-*` headers against the tool's input
        schema before dispatch. Without this lookup it would run the whole tools/list handler
        for every call (the largest per-call cost seen in bench/gateway_latency.py); it reads
        the schemas of the last listing instead, emptied when the offered set changes. None (no
        listing yet) skips that header check, as the SDK does when a listing fails."""
        return self._schemas.get(name)

    async def _list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self._remember(ctx)
        with mcp_errors():
            tools = await self._gateway.tools(self.toolbox_id)
        self._learn(tools)
        tools = visible(self._gateway, self.toolbox_id, caller_of(ctx), tools)  # gateway.access
        return types.ListToolsResult(
            tools=[types.Tool.model_validate({**t.definition, "name": t.name}) for t in tools]
        )

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> Any:
        """Route the call, and journal it (outcome and sizes only) whatever happens."""
        self._remember(ctx)
        started, outcome, answered = time.perf_counter(), "error", 0
        try:
            if not may_call(self._gateway, self.toolbox_id, caller_of(ctx), params.name):
                raise ToolDenied(f"unknown tool {params.name!r}")
            result = await self._gateway.call(
                self.toolbox_id, params.name, params.arguments, self._envelope(ctx, params.name)
            )
            outcome, answered = ("error" if result.get("isError") else "ok"), _size(result)
        except Exception as exc:
            outcome = journal_outcome(exc)
            raise_mcp_error(exc)
        except asyncio.CancelledError:
            outcome = "cancelled"  # its client went away, or its session ended
            raise
        else:
            if params.name not in self._schemas:  # so that the next calls' headers are checked
                await self._relearn()
            # The wire JSON as is (typed Any: the SDK's hint names only models; its runner takes a
            # dict too). The SDK validates a returned dict against the client's protocol version
            # and shapes it for that version anyway, so a model made here would be built, dumped
            # and validated again for nothing.
            return result
        finally:
            if self._audit is not None:
                self._journal(ctx, params, outcome, time.perf_counter() - started, answered)

    def _envelope(self, ctx: Any, name: str) -> dict[str, Any] | None:
        """The 2026-07-28 envelope the call may be relayed with as is: a 2026-07-28 client's
        own, or the one made for a handshake-era session (gateway/handshake.relay_envelope);
        only for a call one of the hot paths took, to a tool whose listed schema asks for no
        `Mcp-Param-*` header (such headers are mirrored by the SDK's client, not relayed)."""
        scope = getattr(getattr(ctx, "request", None), "scope", None) or {}
        envelope = scope.get(exchange.ENVELOPE_SCOPE_KEY)
        if not isinstance(envelope, dict) or name not in self._headerless:
            return None
        return envelope

    def _journal(
        self,
        ctx: Any,
        params: types.CallToolRequestParams,
        outcome: str,
        duration: float,
        answered: int,
    ) -> None:
        assert self._audit is not None
        scope = getattr(getattr(ctx, "request", None), "scope", None) or {}
        server, tool = split_name(params.name) or ("", params.name)
        caller = caller_of(ctx)
        self._audit.record(
            ToolCall(
                ts=time.time(),
                toolbox=self.toolbox_id,
                server=server[:MAX_NAME_IN_JOURNAL],
                tool=tool[:MAX_NAME_IN_JOURNAL],
                token=str(scope.get(PRINCIPAL_SCOPE_KEY, AGENT_PRINCIPAL)),
                duration=duration,
                outcome=outcome,
                request_bytes=_size(params.arguments or {}),
                response_bytes=answered,
                subject=caller.subject if caller is not None else "",
                issuer=caller.issuer if caller is not None else "",
            )
        )

    async def serve(
        self, request: web.Request, principal: str, caller: JwtCaller | None
    ) -> web.StreamResponse:
        """Answer one HTTP request to this endpoint, as the caller the middleware found (its
        principal for the journal; its JWT claims, if a JWT opened it, for `gateway.access`): on the
        hot path of its era (gateway/exchange.py for 2026-07-28, gateway/handshake.py for an
        open handshake-era session) or the SDK's whole way (gateway/asgi.py)."""
        scope: dict[str, Any] = {PRINCIPAL_SCOPE_KEY: principal}
        if caller is not None:
            scope[CALLER_SCOPE_KEY] = caller
        body: bytes | None = None
        reply: web.Response | None = None
        if self._unlearnt(exchange.called_tool(request)):
            # No listing has named the tool yet (a fresh endpoint, or the offered tools changed
            # since): without its schema the SDK would skip the call's `Mcp-Param-*` check and
            # pass a header that disagrees with the arguments. A failed listing leaves the
            # check skipped, as the SDK's own lookup does when its listing fails.
            await self._relearn()
        if exchange.takes(request):
            body = await request.read()
            reply = await exchange.answer(request, body, self.server, self.lifespan_state, scope)
        elif (session_id := handshake.session_of(request)) is not None:
            body, reply = await handshake.answer(
                request,
                session_id,
                self.sessions,
                self.manager,
                self.server,
                self.lifespan_state,
                scope,
            )
        if reply is not None:
            return reply
        return await serve_asgi(self.manager.handle_request, request, scope, body)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
