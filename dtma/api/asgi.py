"""Serve one ASGI application from one aiohttp handler (the MCP SDK's streamable-HTTP server is
ASGI). Only what that server uses: the HTTP scope, a streamed request body, streamed response
bodies (SSE), and `http.disconnect` once the response is done or the client has gone.

Concurrency: one call per request; the ASGI app runs in the handler's task, so aiohttp's
cancellation of a handler reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
DISCONNECT_POLL_S = 0.5


def _scope(request: web.Request, extra: dict[str, Any]) -> Scope:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": "https" if request.secure else "http",
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1"),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
        "server": tuple(sock[:2]) if isinstance(sock, tuple) else None,
        "state": {},
        **extra,
    }


async def serve_asgi(
    app: ASGIApp, request: web.Request, extra_scope: dict[str, Any] | None = None
) -> web.StreamResponse:
    """Run `app` for this request and return the (already sent) response."""
    response: web.StreamResponse | None = None
    finished = asyncio.Event()
    body_done = False

    async def receive() -> Message:
        nonlocal body_done
        if not body_done:
            chunk = await request.content.readany()
            body_done = request.content.at_eof() or not chunk
            return {"type": "http.request", "body": chunk, "more_body": not body_done}
        # After the body: block until the response is over or the client has gone away.
        while not finished.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), DISCONNECT_POLL_S)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for key, value in message.get("headers", []):
                response.headers.add(key.decode("latin-1"), value.decode("latin-1"))
        elif message["type"] == "http.response.body":
            if response is None:
                raise RuntimeError("ASGI app sent a body before the response start")
            if not response.prepared:
                await response.prepare(request)
            body = message.get("body", b"")
            if body:
                await response.write(body)
            if not message.get("more_body", False):
                await response.write_eof()
                finished.set()

    try:
        await app(_scope(request, extra_scope or {}), receive, send)
    finally:
        finished.set()
    if response is None:
        raise RuntimeError("the ASGI app sent no response")
    if not response.prepared:
        await response.prepare(request)
        await response.write_eof()
    return response
