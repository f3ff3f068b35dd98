"""The endpoint's hot path: one 2026-07-28 `tools/call` POST, answered straight from aiohttp.

The SDK's own entry for such a request (`StreamableHTTPSessionManager.handle_request`) wraps it
in a Starlette request, an ASGI exchange and a task group that defers committing to SSE; on the
project's 2-core machines those layers cost more than the call itself (bench/gateway_latency.py).
This path keeps every protocol decision the SDK's: its inbound ladder
(`classify_inbound_request`, `find_duplicated_routing_header`) checks the envelope and headers,
`serve_one` runs the lowlevel server's dispatch (request validation, our handler, result
shaping for the client's revision), `modern_error_data` maps a failure, and the reply is the
SDK's `JSONRPCResponse`/`JSONRPCError` with the SDK's HTTP status for its error code.

Only the plain case is taken: a JSON body that is one request with an id, every routing header
present once and agreeing with the body, no `Mcp-Param-*` headers, no progress token, a
supported revision, an `Accept` the SDK would serve. Anything else returns None and goes the
SDK's whole way (api/asgi.py), so every rejection and every other method is answered by the SDK
itself. A call answered here is never switched to SSE: its reply is one JSON body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
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
    MCP_PARAM_HEADER_PREFIX,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
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

from dtma.api.asgi import DISCONNECT_POLL_S, http_scope
from dtma.cancellation import NUDGE_S, raise_if_cancelling

METHOD = "tools/call"
ENVELOPE_SCOPE_KEY = "dtma.envelope"  # the request's `params._meta`, for the handler
PARAM_HEADER_KEY = "x-mcp-header"  # a schema's mark for arguments mirrored into headers
_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower()
_JSON = "application/json"
CLIENT_GONE = 499  # the status of an answer nobody reads (the client closed the connection)


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
        """Never set here (a client cancels by closing its connection); made on first use, as
        it is rarely read."""
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
    if request.method != "POST" or headers.get(MCP_METHOD_HEADER) != METHOD:
        return False
    if headers.get(MCP_PROTOCOL_VERSION_HEADER) not in MODERN_PROTOCOL_VERSIONS:
        return False
    if not headers.get("content-type", "").lower().startswith(_JSON):
        return False
    length = request.content_length
    if length is None or length > min(DEFAULT_MAX_REQUEST_BODY_SIZE, request.client_max_size):
        return False  # chunked or too large for one read here: the SDK's path answers
    # The SDK's own Accept rule (it reads only `.headers`); this endpoint is SSE-capable, so both
    # types must be acceptable, as the SDK's entry requires.
    has_json, has_sse = check_accept_headers(cast(Any, request))
    if not (has_json and has_sse):
        return False
    return not any(name.lower().startswith(_PARAM_PREFIX) for name in headers)


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
    """The reply to a `tools/call` this path takes (see `takes`), or None for the SDK's path."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict) or "id" not in decoded:
        return None
    try:
        req = JSONRPCRequest.model_validate(decoded)
    except ValidationError:
        return None
    raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
    if find_duplicated_routing_header(raw_headers) is not None:
        return None
    headers = {k.lower(): v for k, v in raw_headers}
    verdict = classify_inbound_request(decoded, headers=headers)
    if isinstance(verdict, InboundLadderRejection) or req.method != METHOD:
        return None
    params = req.params or {}
    if progress_token_from_params(params) is not None:
        return None
    if _param_headers_rejected(server, params, headers):
        return None
    connection = Connection.from_envelope(
        verdict.protocol_version, verdict.client_info, verdict.client_capabilities
    )
    exchange = _Exchange(
        transport=TransportContext(kind="streamable-http", can_send_request=False, headers=headers),
        request_id=req.id,
        message_metadata=ServerMessageMetadata(
            request_context=StarletteRequest(
                http_scope(request, {**extra_scope, ENVELOPE_SCOPE_KEY: params.get("_meta")})
            )
        ),
    )
    status = 200
    reply: JSONRPCResponse | JSONRPCError
    with _CancelledOnceGone(request) as watch:
        try:
            result = await serve_one(
                server,
                exchange,
                METHOD,
                req.params,
                connection=connection,
                lifespan_state=lifespan_state,
            )
            reply = JSONRPCResponse(jsonrpc="2.0", id=req.id, result=result)
        except Exception as exc:
            raise_if_cancelling()
            error = modern_error_data(exc)
            status = ERROR_CODE_HTTP_STATUS.get(error.code, 200)
            reply = JSONRPCError(jsonrpc="2.0", id=req.id, error=error)
    if watch.gone:
        return web.Response(status=CLIENT_GONE)  # never read: the client has gone
    return web.Response(
        status=status,
        body=reply.model_dump_json(by_alias=True, exclude_none=True).encode(),
        content_type=_JSON,
    )


class _CancelledOnceGone:
    """Cancels the task that enters it once the client has closed its connection (checked every
    DISCONNECT_POLL_S), and again every NUDGE_S while the call swallows it (cancellation.py): on
    the 2026-07-28 revision closing the connection is how a client cancels, and the SDK's entry
    honours it the same way. Those cancellations end at the exit (`gone` is then True); any
    other goes on. A call that swallows them all and returns is answered with `gone` True all the
    same. The watch costs one timer per call; the call runs in the handler's own task."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._before = 0  # the task's pending cancellations at the entry (others')
        self._cancels = 0  # issued by the watch
        self.gone = False

    def __enter__(self) -> _CancelledOnceGone:
        self._task = asyncio.current_task()
        assert self._task is not None
        self._before = self._task.cancelling()
        self._timer = asyncio.get_running_loop().call_later(DISCONNECT_POLL_S, self._check)
        return self

    def _check(self) -> None:
        assert self._task is not None
        transport = self._request.transport
        if self.gone or transport is None or transport.is_closing():
            self.gone = True
            self._cancels += 1
            self._task.cancel()
            delay = NUDGE_S  # again, in case the call swallowed it
        else:
            delay = DISCONNECT_POLL_S
        self._timer = asyncio.get_running_loop().call_later(delay, self._check)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        assert self._timer is not None
        assert self._task is not None
        self._timer.cancel()
        if not self.gone:
            return False
        left = self._task.cancelling()
        for _cancel in range(self._cancels):
            left = self._task.uncancel()
        # Ours only: swallow the CancelledError unless someone else cancelled too.
        return left <= self._before and kind is asyncio.CancelledError
