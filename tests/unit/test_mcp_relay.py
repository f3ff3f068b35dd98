"""The relay (adapters/mcp_relay.py) against a local HTTP server: it sends the agent's own (no)
capabilities in the client's envelope, never follows a redirect, and maps answers as the SDK's
session does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from mcp.shared.exceptions import MCPError

from dtma.adapters.mcp_relay import HttpRelay
from dtma.errors import ServerUnavailable, UpstreamAnswerRefused

ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "1"},
}


class Upstream:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, dict[str, Any]]] = []  # (headers, body)
        self.elsewhere = 0
        self.answer: Any = None  # a JSON-RPC reply (with the request's id), or a redirect
        self.sse = False

    async def mcp(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((request.headers.copy(), body))
        if self.answer == "redirect":
            raise web.HTTPTemporaryRedirect("/elsewhere")
        reply = {"jsonrpc": "2.0", "id": body["id"], **self.answer}
        if self.sse:  # streamed, in chunks: a progress notification first, then the reply
            stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await stream.prepare(request)
            note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
            for event in (note, reply):
                await stream.write(f"event: message\ndata: {json.dumps(event)}\n\n".encode())
            await stream.write_eof()
            return stream
        return web.json_response(reply)

    async def other(self, request: web.Request) -> web.Response:
        self.elsewhere += 1
        return web.json_response({})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    app = web.Application()
    app.router.add_post("/mcp", up.mcp)
    app.router.add_route("*", "/elsewhere", up.other)
    server = TestServer(app)
    await server.start_server()
    yield up, str(server.make_url("/mcp"))
    await server.close()


async def test_the_call_carries_the_envelope_with_the_agents_capabilities(
    upstream: tuple[Upstream, str],
) -> None:
    up, url = upstream
    up.answer = {"result": {"content": [], "resultType": "complete"}}
    relay = HttpRelay(url, connect_timeout=2)
    try:
        result = await relay.call_tool("list_notes", {"q": 1}, ENVELOPE, 5)
    finally:
        await relay.close()
    assert result == {"content": [], "resultType": "complete"}
    headers, body = up.seen[0]
    assert body["method"] == "tools/call"
    assert body["params"]["name"] == "list_notes"
    assert body["params"]["arguments"] == {"q": 1}
    meta = body["params"]["_meta"]
    assert meta["io.modelcontextprotocol/clientCapabilities"] == {}
    assert meta["io.modelcontextprotocol/clientInfo"] == {"name": "c", "version": "1"}
    assert headers["Mcp-Method"] == "tools/call"
    assert headers["Mcp-Name"] == "list_notes"
    assert headers["MCP-Protocol-Version"] == "2026-07-28"


async def test_an_answer_streamed_as_sse_is_read(upstream: tuple[Upstream, str]) -> None:
    up, url = upstream
    up.answer = {"result": {"content": [{"type": "text", "text": "hi"}]}}
    up.sse = True
    relay = HttpRelay(url, connect_timeout=2)
    try:
        for _ in range(2):  # and the connection is reused after a chunked answer
            result = await relay.call_tool("list_notes", {}, ENVELOPE, 5)
            assert result == {"content": [{"type": "text", "text": "hi"}]}
    finally:
        await relay.close()
    assert len(up.seen) == 2


async def test_a_redirect_is_not_followed(upstream: tuple[Upstream, str]) -> None:
    up, url = upstream
    up.answer = "redirect"
    relay = HttpRelay(url, connect_timeout=2)
    try:
        with pytest.raises(ServerUnavailable, match="HTTP 307"):
            await relay.call_tool("list_notes", {}, ENVELOPE, 5)
    finally:
        await relay.close()
    assert up.elsewhere == 0


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        ({"code": -32602, "message": "bad params"}, MCPError),
        ({"code": -32000, "message": "Connection closed"}, ServerUnavailable),
    ],
)
async def test_errors_map_as_the_sdk_session_maps_them(
    upstream: tuple[Upstream, str], error: dict[str, Any], raised: type[Exception]
) -> None:
    up, url = upstream
    up.answer = {"error": error}
    relay = HttpRelay(url, connect_timeout=2)
    try:
        with pytest.raises(raised):
            await relay.call_tool("list_notes", {}, ENVELOPE, 5)
    finally:
        await relay.close()
    assert json.dumps(up.seen[0][1])  # the request was sent


async def test_an_answer_over_the_bound_fails_this_call_only(
    upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    up, url = upstream
    up.answer = {"result": {"content": [{"type": "text", "text": "x" * 2000}]}}
    monkeypatch.setattr("dtma.adapters.mcp_relay.MAX_ANSWER_BYTES", 1000)
    relay = HttpRelay(url, connect_timeout=2)
    try:
        with pytest.raises(UpstreamAnswerRefused, match="larger than 1000 bytes") as refused:
            await relay.call_tool("list_notes", {}, ENVELOPE, 5)
        assert not refused.value.transient  # this call's fault: not retryable
    finally:
        await relay.close()
