"""gateway/sdk_compat.py, every read of the MCP SDK's private parts: each name it reads exists on
the installed SDK (an upgrade that moves one fails here, not in production), and its idle
accounting holds a handshake-era session as the SDK's own transport does."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import anyio
from mcp.server.connection import Connection
from mcp.server.streamable_http import StreamableHTTPServerTransport

from dtma.gateway import sdk_compat


async def test_a_request_on_the_hot_path_holds_the_sessions_idle_countdown() -> None:
    transport = StreamableHTTPServerTransport(mcp_session_id="s1", idle_timeout=30.0)
    async with transport.connect():
        idle = transport.idle_scope
        assert idle is not None
        idle.deadline = anyio.current_time() + 1.0  # as after the session's last request
        with sdk_compat.in_flight(transport):
            assert idle.deadline == float("inf")
            with sdk_compat.in_flight(transport):
                pass
            assert idle.deadline == float("inf")  # one still in flight
        assert 29.0 < idle.deadline - anyio.current_time() <= 30.0
        assert transport._requests_in_flight == 0


def test_the_sdk_still_has_what_sdk_compat_reads() -> None:
    """The names gateway/sdk_compat.py reads off the SDK: an upgrade that moves one fails here."""
    from mcp.server.session import ServerSession
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from dtma.gateway.endpoint import _ToolboxServer

    manager = StreamableHTTPSessionManager(_ToolboxServer("x"))
    assert isinstance(manager._server_instances, dict)
    assert isinstance(manager._session_owners, dict)
    transport = StreamableHTTPServerTransport(mcp_session_id="s", idle_timeout=1.0)
    assert transport._idle_timeout == 1.0
    assert transport._requests_in_flight == 0
    connection = Connection.from_envelope("2026-07-28", None, None)
    session = ServerSession(cast(Any, None), connection)
    assert sdk_compat.connection_of(SimpleNamespace(session=session)) is connection
