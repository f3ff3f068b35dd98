"""The agent's held session to a 2026-07-28 HTTP server (adapters/mcp_upstream.HttpUpstream)
calls a tool whose schema marks an argument `x-mcp-header` as the server requires: with the
`Mcp-Param-*` header, which the SDK's client mirrors only for tools the session has listed.

The endpoint caches a server's tool definitions per container, so a session reopened after the
endpoint's last listing (the previous one failed or timed out) may take a call before anything
has listed on it; the server (mcp-kit TOOL_SET=headers, the SDK's server) then refuses the call."""

from __future__ import annotations

from typing import Any

import pytest

from dtma.adapters import mcp_upstream
from tests.conftest import build_images, container_ip, wait_until

pytestmark = pytest.mark.integration

MCP_KIT = "dtma-examples/mcp-kit:latest"


@pytest.fixture
def kit_url(make_container: Any, make_network: Any) -> str:
    """mcp-kit TOOL_SET=headers over HTTP on a fresh internal network; its MCP URL."""
    build_images("mcp-kit")
    net = make_network(internal=True)
    c = make_container(
        MCP_KIT,
        environment={"TOOL_SET": "headers"},
        network=net.name,
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    wait_until(lambda: b"serving on" in c.logs(), 30, "mcp-kit listening")
    c.reload()
    return f"http://{container_ip(c, net)}:8000/mcp"


async def test_a_fresh_session_calls_a_marked_tool_with_its_header(kit_url: str) -> None:
    upstream = mcp_upstream.HttpUpstream(kit_url, connect_timeout=5)
    try:
        session = await upstream.session()
        assert session.protocol_version == "2026-07-28"
        # No listing here: the session itself must know the mark.
        answer = await mcp_upstream.call_tool(session, "locate", {"region": "Tyrol"}, 10)
        assert answer["content"][0]["text"] == "somewhere in Tyrol", answer
    finally:
        await upstream.close()
