"""The endpoint's hot path: one 2026-07-28 request (`tools/call`, `tools/list`, `prompts/*`,
`resources/*`) POSTed on its own, answered straight from aiohttp.

The SDK's own entry for such a request (`StreamableHTTPSessionManager.handle_request`) wraps it
in a Starlette request, an ASGI exchange and a task group that defers committing to SSE; on the
project's 2-core machines those layers cost more than the call itself (bench/gateway_latency.py).
This path keeps every protocol decision the SDK's: its inbound ladder
(`classify_inbound_request`, `find_duplicated_routing_header`) checks the envelope and headers,
`serve_one` runs the lowlevel server's dispatch (request validation, our handler, result
shaping for the client's revision), `modern_error_data` maps a failure, and the reply is the
SDK's `JSONRPCResponse`/`JSONRPCError` with the SDK's HTTP status for its error code.
A handshake-era session's requests take the same way once the session is open
(gateway/handshake.py): `reply` below is shared.

Only the plain case is taken: a JSON body that is one request with an id, every routing header
present once and agreeing with the body, no `Mcp-Param-*` headers, no progress token, a
supported revision, an `Accept` the SDK would serve. Anything else returns None and goes the
SDK's whole way (gateway/asgi.py), so every rejection and every other method is answered by the SDK
itself. A request answered here is never switched to SSE: its reply is one JSON body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import anyio
from aiohttp import web
from mcp.server.connection import Connection
from mcp.server.runner import modern_error_data, serve_one
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PARAM_HEADER_PREFIX,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    decode_header_value,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import JSONRPCError, JSONRPCRequest, JSONRPCResponse
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.requests import Request as StarletteRequest

from dtma.cancellation import raise_if_cancelling
from dtma.gateway.asgi import http_scope

METHOD = "tools/call"
# The requests answered here: those a toolbox's clients make all the time. `initialize`, `ping`,
# subscriptions, completions and anything new take the SDK's whole way.
HOT_METHODS = frozenset(
    {
        METHOD,
        "tools/list",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    }
)
ENVELOPE_SCOPE_KEY = "dtma.envelope"  # the request's `params._meta`, for the handler
PARAM_HEADER_KEY = "x-mcp-header"  # a schema's mark for arguments mirrored into headers
_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower()
_JSON = "application/json"


@dataclass
class _Exchange:
    """The SDK's `DispatchContext` for one request-response exchange: no back-channel (the
    2026-07-28 revision forbids server-to-client requests) and no progress (a request with a
    progress token takes the SDK's path, whose SSE stream can carry it)."""

    transport: TransportContext
    request_id: Any
    message_metadata: ServerMessageMetadata
    can_send_request: bool = False
    _cancel_requested: anyio.Event | None = None

    @property
    def cancel_requested(self) -> anyio.Event:
        """Never set here: a client's cancel (its connection closed, or on the handshake-era
        path its `notifications/cancelled`: gateway/handshake.SessionBook) cancels the call's
        scope instead. Made on first use, as it is rarely read."""
        if self._cancel_requested is None:
            self._cancel_requested = anyio.Event()
        return self._cancel_requested

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        return None  # one JSON reply: nowhere to put a notification

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        return None


def takes(request: web.Request) -> bool:
    """Whether the request's headers alone allow this path (cheap; the body is read after)."""
    headers = request.headers
    if headers.get(MCP_METHOD_HEADER) not in HOT_METHODS:
        return False
    if headers.get(MCP_PROTOCOL_VERSION_HEADER) not in MODERN_PROTOCOL_VERSIONS:
        return False
    return plain_json_post(request) and not any(
        name.lower().startswith(_PARAM_PREFIX) for name in headers
    )


def plain_json_post(request: web.Request) -> bool:
    """A POST of one JSON body of a known, bounded length that the SDK would accept, with an
    `Accept` naming both JSON and SSE (this endpoint can stream, so the SDK requires both)."""
    if request.method != "POST":
        return False
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != _JSON:
        return False
    length = request.content_length
    if length is None or length > min(DEFAULT_MAX_REQUEST_BODY_SIZE, request.client_max_size):
        return False  # chunked or too large for one read here: the SDK's path answers
    has_json, has_sse = check_accept_headers(cast(Any, request))  # it reads only `.headers`
    return has_json and has_sse


def one_request(
    body: bytes, parse: Callable[[bytes], Any] = json.loads
) -> tuple[JSONRPCRequest, dict[str, Any]] | None:
    """The body as one JSON-RPC request of a method answered here, with no progress token (a
    request with one takes the SDK's path, whose SSE stream can carry progress); else None.
    `parse`: the JSON parser the SDK's own entry for the request's era uses (a body one of
    them refuses, a BOM or a lone surrogate, must be refused the SDK's way)."""
    try:
        decoded = parse(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict) or "id" not in decoded:
        return None
    if decoded.get("method") not in HOT_METHODS:
        return None
    try:
        req = JSONRPCRequest.model_validate(decoded)
    except ValidationError:
        return None
    if progress_token_from_params(req.params) is not None:
        return None
    return req, decoded


def called_tool(request: web.Request) -> str | None:
    """The tool a 2026-07-28 `tools/call` names in its `Mcp-Name` header ("" when that header is
    absent or malformed), or None for any other request. Such a call's `Mcp-Param-*` headers are
    checked, on either path, against the tool's schema from the endpoint's last listing (its
    `get_tool_input_schema`), so the endpoint must have listed a tool before its call is served."""
    headers = request.headers
    if headers.get(MCP_METHOD_HEADER) != METHOD:
        return None
    if headers.get(MCP_PROTOCOL_VERSION_HEADER) not in MODERN_PROTOCOL_VERSIONS:
        return None
    return decode_header_value(headers.get(MCP_NAME_HEADER)) or ""


def _param_headers_rejected(server: Any, params: Mapping[str, Any], headers: Any) -> bool:
    """Whether the SDK would refuse the call for its `Mcp-Param-*` headers: the same check as
    its own entry (with no such header, only arguments a schema marks can fail it)."""
    arguments = params.get("arguments")
    name = params.get("name")
    if not arguments or not isinstance(arguments, Mapping) or not isinstance(name, str):
        return False
    lookup = server.get_tool_input_schema
    schema = lookup(name) if lookup is not None else None
    if schema is None:
        return False
    return validate_mcp_param_headers(schema, arguments, headers) is not None


async def answer(
    request: web.Request,
    body: bytes,
    server: Any,
    lifespan_state: Any,
    extra_scope: dict[str, Any],
) -> web.Response | None:
    """The reply to a request this path takes (see `takes`), or None for the SDK's path."""
    parsed = one_request(body)
    if parsed is None:
        return None
    req, decoded = parsed
    raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
    if find_duplicated_routing_header(raw_headers) is not None:
        return None
    headers = {k.lower(): v for k, v in raw_headers}
    verdict = classify_inbound_request(decoded, headers=headers)
    if isinstance(verdict, InboundLadderRejection):
        return None
    params = req.params or {}
    if req.method == METHOD and _param_headers_rejected(server, params, headers):
        return None
    connection = Connection.from_envelope(
        verdict.protocol_version, verdict.client_info, verdict.client_capabilities
    )

    async def run(exchange: _Exchange) -> dict[str, Any]:
        return await serve_one(
            server,
            exchange,
            req.method,
            req.params,
            connection=connection,
            lifespan_state=lifespan_state,
        )

    scope = {**extra_scope, ENVELOPE_SCOPE_KEY: params.get("_meta")}
    return await reply(request, req, run, scope, headers)


async def reply(
    request: web.Request,
    req: JSONRPCRequest,
    run: Callable[[_Exchange], Awaitable[dict[str, Any]]],
    extra_scope: dict[str, Any],
    headers: dict[str, str],
    *,
    status_of: Callable[[int], int] = lambda code: ERROR_CODE_HTTP_STATUS.get(code, 200),
    reply_headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Run one request's dispatch (`run`, given the exchange) and answer it as one JSON body: the
    result, or the error `modern_error_data` maps (HTTP status by `status_of` its code). A
    handler's other failures never reach the wire. A client that closes its connection cancels
    the call: aiohttp cancels the handler's task, which runs it (api/disconnects.py); the
    CancelledError goes on to aiohttp, which answers nobody."""
    exchange = _Exchange(
        transport=TransportContext(kind="streamable-http", can_send_request=False, headers=headers),
        request_id=req.id,
        message_metadata=ServerMessageMetadata(
            request_context=StarletteRequest(http_scope(request, extra_scope))
        ),
    )
    status = 200
    answer: JSONRPCResponse | JSONRPCError
    try:
        result = await run(exchange)
        answer = JSONRPCResponse(jsonrpc="2.0", id=req.id, result=result)
    except Exception as exc:
        raise_if_cancelling()  # a cancel an SDK task group turned into an ExceptionGroup
        error = modern_error_data(exc)
        status = status_of(error.code)
        answer = JSONRPCError(jsonrpc="2.0", id=req.id, error=error)
    return web.Response(
        status=status,
        body=answer.model_dump_json(by_alias=True, exclude_none=True).encode(),
        content_type=_JSON,
        headers=reply_headers,
    )
