"""The hot path for handshake-era clients: once a session is open, its `tools/call` (and
`tools/list`, `prompts/*`, `resources/*`) takes the same way as a 2026-07-28 request.

The SDK serves a session's request through its transport: a Starlette request, the session's
memory streams, a dispatcher task, and an SSE stream for the answer. On 2 cores that cost four
times the agent CPU per call of the 2026-07-28 path (bench/gateway_latency.py). Here the request
is run by the SDK's own `ServerRunner` over the session's own `Connection` (so the negotiated
version, the client's capabilities and the initialized state are the session's, and the SDK
validates what enters and shapes what leaves for that version), and answered as one JSON body,
which the streamable HTTP transport allows for any request. A call to an HTTP server that
negotiated 2026-07-28 is then relayed to it as a 2026-07-28 client's is (`relay_envelope`).

Taken only when the SDK would serve the request itself: a POST of one JSON request with an id,
to a session the manager holds open and whose client has sent `notifications/initialized`, with
no protocol-version header or a handshake-era one, no progress token, and an `Accept` the SDK
would serve. Anything else (the session's first requests, notifications, responses, batches,
`initialize`, `ping`, unknown or ended sessions) returns None and goes the SDK's whole way. The
session's idle countdown is held while a request runs here, as the SDK's transport holds it.

Differences from the SDK's way, on purpose: the answer is never SSE, so a server-to-client
request or notification tied to the call has nowhere to go (the gateway makes none; a request
carrying a progress token is left to the SDK); a client that closes its connection cancels its
call, as on 2026-07-28 (the handshake era's SDK way lets such a call run on); and a handler's
unexpected failure is a generic internal error, never its text. As on the SDK's way, a
`notifications/cancelled` for a call in flight here cancels it (the handshake era's way to
cancel, which the official SDK client uses: it keeps its connection open), and a session's end
(its DELETE) cancels its calls in flight; both are answered as the SDK answers them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anyio
import pydantic_core
from aiohttp import web
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, REQUEST_CANCELLED
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp_types import (
    CLIENT_INFO_META_KEY,
    INTERNAL_ERROR,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    RequestId,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_MODERN_VERSION

from dtma.gateway import exchange
from dtma.sdk_compat import server as sdk_server

_CANCEL = "notifications/cancelled"


def session_of(request: web.Request) -> str | None:
    """The session a request's headers name, when they alone allow this path (cheap)."""
    session_id = request.headers.get(MCP_SESSION_ID_HEADER)
    if not session_id:
        return None
    version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
    if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None  # the SDK routes any other version to its 2026-07-28 entry
    return session_id if exchange.plain_json_post(request) else None


_ENDED_STATE_KEY = "dtma.session_ended"


class SessionBook:
    """The `Connection` of every open handshake-era session whose client has sent
    `notifications/initialized`, by session id: a `Server.middleware` (the SDK's documented hook,
    which sees every message its transports deliver), so a session is known from the first
    message after its handshake. An entry goes when the session's connection closes (its exit
    stack, which the SDK unwinds however the session ends: a DELETE, its idle time, the
    endpoint's end), and the session's calls on this path are then cancelled (`call`), as the
    SDK's own ending of a session cancels the requests it is serving. The client's
    `notifications/cancelled` (which the SDK's way delivers, through this middleware, to the
    session it names) cancels the call on this path with that request id in that session, as
    the SDK's dispatcher cancels a request it is serving."""

    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}
        # session id -> the calls in flight on this path: each one's scope and request id
        self._calls: dict[str, dict[anyio.CancelScope, RequestId]] = {}

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        connection = sdk_server.connection_of(ctx)
        cancel = ctx.method == _CANCEL and ctx.request_id is None  # a notification, not a request
        if cancel and connection is not None and connection.session_id is not None:
            self._cancel(connection.session_id, cancelled_request_id_from_params(ctx.params))
        result = await call_next(ctx)
        if connection is not None and connection.session_id is not None:
            self._note(connection.session_id, connection)
        return result

    def _cancel(self, session_id: str, request_id: RequestId | None) -> None:
        if request_id is None:
            return
        wanted = coerce_request_id(request_id)  # "7" and 7 are one id, as in the SDK
        for scope, rid in self._calls.get(session_id, {}).items():
            if coerce_request_id(rid) == wanted:
                scope.cancel()

    def _note(self, session_id: str, connection: Connection) -> None:
        if session_id in self._connections or not connection.initialized.is_set():
            return
        if connection.state.get(_ENDED_STATE_KEY):
            return  # a call that outlived its session: its exit stack has run already
        self._connections[session_id] = connection
        connection.exit_stack.callback(self._forget, session_id, connection)

    def _forget(self, session_id: str, connection: Connection) -> None:
        connection.state[_ENDED_STATE_KEY] = True
        self._connections.pop(session_id, None)
        for scope in self._calls.pop(session_id, {}):
            scope.cancel()

    @contextlib.contextmanager
    def call(self, session_id: str, request_id: RequestId) -> Iterator[anyio.CancelScope]:
        """Run a block for this open session's request that the session's end or the client's
        cancel of `request_id` cancels: the scope's `cancel_called` then says so (the scope
        swallows only that cancellation; any other goes on; which of the two it was: whether the
        session is still open, `get`). Enter it with no await since the session was seen open."""
        calls = self._calls.setdefault(session_id, {})
        with anyio.CancelScope() as scope:
            calls[scope] = request_id
            try:
                yield scope
            finally:
                calls.pop(scope, None)
                if not calls and self._calls.get(session_id) is calls:
                    del self._calls[session_id]

    def __len__(self) -> int:
        return len(self._connections)

    def get(self, session_id: str) -> Connection | None:
        return self._connections.get(session_id)


_ENVELOPE_STATE_KEY = "dtma.relay_envelope"


def relay_envelope(connection: Connection) -> dict[str, Any]:
    """A 2026-07-28 envelope for this session's calls, made once per session: with it a call can
    be relayed to an HTTP server that negotiated that revision (adapters/mcp_relay.py) as a
    2026-07-28 client's call is, instead of through the agent's SDK session to that server.
    Either way the server sees the agent's upstream revision, not the client's, and the answer
    is shaped for the client's revision by the SDK on the way back. It names the latest
    2026-era revision (a server that negotiated another is not relayed to) and the client's info
    from its handshake; capabilities are the agent's own (none) on the relay anyway."""
    envelope = connection.state.get(_ENVELOPE_STATE_KEY)
    if envelope is None:
        envelope = {PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION}
        params = connection.client_params
        if params is not None:
            envelope[CLIENT_INFO_META_KEY] = params.client_info.model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
        connection.state[_ENVELOPE_STATE_KEY] = envelope
    return dict(envelope)


async def answer(
    request: web.Request,
    session_id: str,
    sessions: SessionBook,
    manager: StreamableHTTPSessionManager,
    server: Any,
    lifespan_state: Any,
    extra_scope: dict[str, Any],
) -> tuple[bytes | None, web.Response | None]:
    """(the body if it was read, the reply) for a request `session_of` let through: the reply is
    None when the SDK's way must answer (it is then given the body read here)."""
    connection = sessions.get(session_id)
    transport = sdk_server.open_transport(manager, session_id)
    if connection is None or transport is None:
        return None, None
    with sdk_server.in_flight(transport):
        body = await request.read()
        parsed = exchange.one_request(body, parse=pydantic_core.from_json)  # as the SDK's
        if parsed is None or sdk_server.open_transport(manager, session_id) is None:
            return body, None  # (ended while its body was read: the SDK answers 404)
        req, _ = parsed
        if sessions.get(session_id) is None:
            return body, None  # (its connection closed while its body was read)
        runner = ServerRunner(server, connection, lifespan_state)

        async def run(dispatch: Any) -> dict[str, Any]:
            result: dict[str, Any] = await runner.on_request(dispatch, req.method, req.params)
            return result

        headers = {k.lower(): v for k, v in request.headers.items()}
        scope = {**extra_scope, exchange.ENVELOPE_SCOPE_KEY: relay_envelope(connection)}
        with sessions.call(session_id, req.id) as call:
            reply = await exchange.reply(
                request,
                req,
                run,
                scope,
                headers,
                status_of=lambda code: 200,  # the handshake era answers JSON-RPC errors with 200
                reply_headers={MCP_SESSION_ID_HEADER: session_id},
            )
        if call.cancel_called:
            if sessions.get(session_id) is None:
                return body, ended_reply(session_id)
            return body, cancelled_reply(session_id, req.id)
        return body, reply


def ended_reply(session_id: str) -> web.Response:
    """The answer to a request whose session ended while it ran: the SDK's own for a request in
    flight when its session is terminated (its JSON-response mode: HTTP 500, INTERNAL_ERROR)."""
    return _error_reply(session_id, 500, None, INTERNAL_ERROR, sdk_server.SESSION_ENDED)


def cancelled_reply(session_id: str, request_id: RequestId) -> web.Response:
    """The answer to a request its client cancelled (`notifications/cancelled`) while it ran:
    the SDK's own on this era's wire, which ends a request only with an answer (its JSON-RPC
    error REQUEST_CANCELLED, with HTTP 200 as every JSON-RPC error of this era)."""
    return _error_reply(session_id, 200, request_id, REQUEST_CANCELLED, sdk_server.CANCELLED)


def _error_reply(
    session_id: str, status: int, request_id: RequestId | None, code: int, message: str
) -> web.Response:
    error = JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))
    return web.Response(
        status=status,
        body=error.model_dump_json(by_alias=True, exclude_unset=True).encode(),
        content_type="application/json",
        headers={MCP_SESSION_ID_HEADER: session_id},
    )
