"""Every use the endpoint makes of the MCP SDK server side's private parts, in one place.

The SDK (pinned to one minor version in pyproject.toml) offers no public way to these, and the
endpoint needs them for three things:
- telling a client's session that a list changed: the per-request `ServerSession` a handler
  receives is the only way to the session's `Connection`;
- answering a handshake-era session's requests on the hot path (gateway/handshake.py): which
  sessions are open is the session manager's, and a request served outside the SDK's transport
  must hold the session's idle countdown as the transport's own entry does;
- dropping the OpenTelemetry middleware the lowlevel `Server` installs by default (a no-op span
  per request, about 7% of the agent's time per call): its class lives in the private module
  `mcp.server._otel`, re-exported here for gateway/endpoint.py.

tests/unit/test_sdk_compat.py (`test_the_sdk_still_has_what_sdk_compat_reads`) checks that each
name read here exists on the installed SDK, so an upgrade that moves one fails there, not in
production.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import anyio
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.connection import Connection
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

__all__ = ["OpenTelemetryMiddleware", "connection_of", "in_flight", "open_transport"]


# The SDK's own words for a request its session ended under, and for one its client cancelled,
# which the hot path answers as the SDK's transport would. The SDK writes them inline (no name
# to import); tests/unit/test_sdk_compat.py checks that its transport still says them.
SESSION_ENDED = "Session terminated before the request completed"
CANCELLED = "Request cancelled"


def connection_of(ctx: Any) -> Connection | None:
    """The `Connection` behind a handler's or middleware's context (its session's, on the
    handshake era; a per-request one on 2026-07-28)."""
    connection = getattr(getattr(ctx, "session", None), "_connection", None)
    return connection if isinstance(connection, Connection) else None


def open_transport(
    manager: StreamableHTTPSessionManager, session_id: str
) -> StreamableHTTPServerTransport | None:
    """The transport of an open session, or None when the manager would answer 404 or is ending
    it (terminated, or its idle time ran out)."""
    transport = manager._server_instances.get(session_id)
    if transport is None or transport.is_terminated:
        return None
    if manager._session_owners.get(session_id) is not None:
        return None  # bound to a credential (dtma binds none): the SDK checks it, not this path
    idle = transport.idle_scope
    if idle is not None and idle.cancel_called:
        return None
    return transport


@contextlib.contextmanager
def in_flight(transport: StreamableHTTPServerTransport) -> Iterator[None]:
    """Count one request in flight on the session, as `StreamableHTTPServerTransport.
    handle_request` does: the idle countdown stops while any request is served and restarts
    when the last one ends. Without this, a session used only through the hot path would be
    closed as idle under its client."""
    idle = transport.idle_scope
    timeout = transport._idle_timeout
    if idle is None or timeout is None:
        yield
        return
    transport._requests_in_flight += 1
    idle.deadline = math.inf
    try:
        yield
    finally:
        transport._requests_in_flight -= 1
        if not transport._requests_in_flight:
            idle.deadline = anyio.current_time() + timeout
