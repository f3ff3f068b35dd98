"""The HTTP probe speaks both MCP eras and grades an auth refusal: real SDK servers on loopback
(built in this process with the official `mcp` SDK, served by uvicorn)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer

from dtma.adapters.mcp_probe import probe_http
from dtma.domain import probe as reasons
from tests.conftest import free_port

pytestmark = pytest.mark.integration

Asgi = Callable[[Any, Any, Any], Any]


def echo_app() -> Any:
    server = MCPServer("eras")

    def echo(text: str) -> str:
        return text

    server.add_tool(echo)
    return server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")


class Intercepting:
    """ASGI wrapper: `answer` may reply to a JSON-RPC POST itself; the rest reaches the SDK app.
    Records the methods it saw."""

    def __init__(self, app: Asgi) -> None:
        self.app = app
        self.methods: list[str] = []

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        return None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        request = json.loads(body)
        self.methods.append(request.get("method", ""))
        reply = self.answer(request)
        if reply is not None:
            await _json(send, reply[0], reply[1])
            return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _error(request: dict[str, Any], error: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request.get("id"), "error": error}


class ModernOnly(Intercepting):
    """Refuses the `initialize` handshake as a server that speaks only 2026-07-28 does (-32022
    naming its versions)."""

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        if request.get("method") != "initialize":
            return None
        data = {"supported": ["2026-07-28"], "requested": "handshake"}
        return 400, _error(request, {"code": -32022, "message": "unsupported", "data": data})


class HandshakeOnly(Intercepting):
    """A server from before 2026-07-28: `server/discover` is an unknown method."""

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        if request.get("method") != "server/discover":
            return None
        return 200, _error(request, {"code": -32601, "message": "Method not found"})


def refusing(status: int) -> Asgi:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        await _json(send, status, {"error": "unauthorized"}, [(b"www-authenticate", b"Bearer")])

    return app


async def _json(
    send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def serve(app: Asgi) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="auto")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_a_server_that_speaks_only_2026_07_28_is_healthy() -> None:
    app = ModernOnly(echo_app())
    async for url in serve(app):
        result = await probe_http(url, timeout=5, expect_tools=["echo"])
        assert result.healthy, result
        assert result.tools == ("echo",)
    assert "initialize" not in app.methods, app.methods  # discovered, never handshaken
    assert app.methods[0] == "server/discover"
    assert "tools/list" in app.methods


async def test_a_handshake_only_server_is_still_healthy() -> None:
    """The probe falls back to initialize, as the SDK's client does in mode='auto'."""
    app = HandshakeOnly(echo_app())
    async for url in serve(app):
        result = await probe_http(url, timeout=5, expect_tools=["echo"])
        assert result.healthy, result
    assert app.methods[:2] == ["server/discover", "initialize"], app.methods


@pytest.mark.parametrize("status", [401, 403])
async def test_an_auth_refusal_is_unauthenticated_not_down(status: int) -> None:
    async for url in serve(refusing(status)):
        result = await probe_http(url, timeout=5)
        assert not result.healthy
        assert result.reason == reasons.UNAUTHENTICATED
        assert str(status) in result.detail


async def test_nothing_listening_is_still_connect_failed() -> None:
    result = await probe_http(f"http://127.0.0.1:{free_port()}/mcp", timeout=3)
    assert result.reason == reasons.CONNECT_FAILED
