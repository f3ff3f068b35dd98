"""A 2026-07-28 `tools/call` relayed to a streamable-HTTP server as the same request.

The 2026-07-28 revision is stateless: every request carries its own envelope (protocol version,
client capabilities, client info in `params._meta`) and says what it is in its `Mcp-Method` and
`Mcp-Name` headers, so that an intermediary can route it without a session. When a client's
request is of that revision and the server behind it negotiated the same one, the agent passes
the request on as it came, with the server's own tool name and a fresh id: the client's envelope
goes through, but with the agent's own capabilities (none, as its SDK session declares), so that
the server never asks for input the relay cannot carry back. It is built and read with the SDK's
types (`JSONRPCRequest`, `JSONRPCResponse`, the SDK's header names and encoding); an SSE answer
is read with httpx2's `EventSource`, as the SDK's client reads it. Redirects are not followed.
Sending it over a pooled keep-alive connection (adapters/http1_client.py) instead of the SDK's
client session and httpx transport costs the agent a fraction of the CPU per call
(bench/gateway_latency.py).

Outcomes match the SDK client's: a JSON-RPC error from the server is an `MCPError`; no answer,
a closed connection or a non-MCP reply is an `UpstreamUnavailable` (retryable); an answer too
large to take is an `UpstreamAnswerRefused` (not retryable).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping
from typing import Any

import httpx2
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    encode_header_value,
)
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CONNECTION_CLOSED,
    PROTOCOL_VERSION_META_KEY,
    REQUEST_TIMEOUT,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
)
from pydantic import TypeAdapter, ValidationError

from dtma.adapters.http1_client import AnswerError, AnswerTooLarge, Http1Origin
from dtma.errors import ServerUnavailable as UpstreamUnavailable
from dtma.errors import UpstreamAnswerRefused
from dtma.observability.redaction import REDACTOR

METHOD = "tools/call"
_ACCEPT = "application/json, text/event-stream"
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # one answer (a stdio server's message has the same bound)
_REPLY: TypeAdapter[JSONRPCResponse | JSONRPCError] = TypeAdapter(JSONRPCResponse | JSONRPCError)


def envelope_version(envelope: Mapping[str, Any]) -> str | None:
    version = envelope.get(PROTOCOL_VERSION_META_KEY)
    return version if isinstance(version, str) else None


class HttpRelay:
    """Relays calls to one server URL over pooled keep-alive connections. Made and used on
    the event loop; `close()` is idempotent."""

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        self.url = url
        self._origin = Http1Origin(url, connect_timeout=connect_timeout, max_body=MAX_ANSWER_BYTES)
        self._ids = itertools.count(1)

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        envelope: Mapping[str, Any],
        timeout: float,
    ) -> dict[str, Any]:
        """The result of `name` as the server's wire JSON. Raises MCPError for the server's
        JSON-RPC error, UpstreamUnavailable when it gave no usable answer (a redirect
        included), UpstreamAnswerRefused for an answer too large to take."""
        version = envelope_version(envelope)
        if version is None:
            raise ValueError("the envelope names no protocol version")
        request_id = next(self._ids)
        # The client's envelope, but the agent's own capabilities (none, as its SDK session
        # declares): the server must not ask for input (elicitation, sampling) the relay cannot
        # carry back.
        params: dict[str, Any] = {
            "name": name,
            "_meta": {**envelope, CLIENT_CAPABILITIES_META_KEY: {}},
        }
        if arguments is not None:
            params["arguments"] = arguments
        request = JSONRPCRequest(jsonrpc="2.0", id=request_id, method=METHOD, params=params)
        headers = {
            "Content-Type": "application/json",
            "Accept": _ACCEPT,
            MCP_PROTOCOL_VERSION_HEADER: version,
            MCP_METHOD_HEADER: METHOD,
            MCP_NAME_HEADER: encode_header_value(name),
        }
        what = f"tools/call {name}"
        try:
            async with asyncio.timeout(timeout):
                answer = await self._origin.post(
                    headers, request.model_dump_json(by_alias=True, exclude_none=True).encode()
                )
        except TimeoutError as exc:
            raise UpstreamUnavailable(f"{what}: no answer within {timeout:g}s") from exc
        except (AnswerTooLarge, ValueError) as exc:
            # This call's own fault, not the server's state: not retryable, session kept (the
            # endpoint answers it as an internal error: gateway/mcp_errors.py).
            raise UpstreamAnswerRefused(f"{what}: {_short(exc)}") from None
        except (AnswerError, OSError) as exc:
            raise UpstreamUnavailable(f"{what} failed: {_short(exc)}") from exc
        replies: list[str | bytes]
        if answer.media_type == "text/event-stream":
            replies = _sse_messages(self.url, answer.body)
        else:
            replies = [answer.body]
        for raw in replies:
            reply = _parse(raw)
            if reply is None or reply.id != request_id:
                continue  # a notification on the stream, or not JSON-RPC
            if isinstance(reply, JSONRPCError):
                error = reply.error
                if error.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT):  # as the SDK path does
                    raise UpstreamUnavailable(f"{what}: {_short_text(error.message)}")
                raise MCPError(code=error.code, message=error.message, data=error.data)
            # Not checked against the revision's result schema here: the SDK's server does that
            # when it shapes the answer for the client (an invalid one is its internal error).
            return reply.result
        raise UpstreamUnavailable(f"{what}: the server answered HTTP {answer.status} with no reply")

    async def close(self) -> None:
        await self._origin.close()


def _parse(raw: bytes | str) -> JSONRPCResponse | JSONRPCError | None:
    try:
        return _REPLY.validate_json(raw)
    except ValidationError:
        return None


def _sse_messages(url: str, body: bytes) -> list[str | bytes]:
    """The `data` of each SSE event in a finished stream (its body, already de-chunked), read by
    httpx2's EventSource (a malformed stream yields what came before the fault)."""
    response = httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=body,
        request=httpx2.Request("POST", url),
    )
    found: list[str | bytes] = []
    with contextlib.suppress(httpx2.HTTPError):
        for event in httpx2.EventSource(response):
            if event.data:
                found.append(event.data)
    return found


def _short(exc: BaseException) -> str:
    return _short_text(str(exc) or type(exc).__name__)


def _short_text(text: str) -> str:
    return REDACTOR.excerpt(text, 200)
