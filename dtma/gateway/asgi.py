"""Serve one ASGI application from one aiohttp handler (the MCP SDK's streamable-HTTP server is
ASGI). Only what that server uses: the HTTP scope, a streamed request body, streamed response
bodies (SSE), and `http.disconnect` once the response is done or the client has gone. A
response sent in one piece (most MCP answers) goes out in one write with its headers; an SSE
response's head goes out as soon as the app starts it. An app that fails once a streamed head
is out has its connection dropped (the client sees a cut stream, not a clean end).

Concurrency: one call per request, in a task of its own that the handler awaits. A client's
disconnect reaches the handler as aiohttp's cancellation of its task (api/disconnects.py),
with no timer; the app hears of it as `http.disconnect` from `receive()`, as from an ASGI
server, and runs to its end (`_until_done_or_gone`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from aiohttp import web

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
log = structlog.get_logger(__name__)


def http_scope(request: web.Request, extra: dict[str, Any]) -> Scope:
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


def _single(request: web.Request, start: Message, body: bytes) -> web.Response:
    """A whole response as one aiohttp Response: aiohttp writes its head and body together (one
    send instead of two or three; most MCP answers are one small JSON body)."""
    response = web.Response(status=start["status"], body=body)
    for key, value in start.get("headers", []):
        name = key.decode("latin-1")
        if name.lower() != "content-length":  # aiohttp sets it from the body
            response.headers.add(name, value.decode("latin-1"))
    return response


def _is_event_stream(start: Message) -> bool:
    return any(
        key.lower() == b"content-type" and value.lower().startswith(b"text/event-stream")
        for key, value in start.get("headers", [])
    )


async def serve_asgi(
    app: ASGIApp,
    request: web.Request,
    extra_scope: dict[str, Any] | None = None,
    body: bytes | None = None,
) -> web.StreamResponse:
    """Run `app` for this request. A response sent in one body message is returned unsent (the
    caller's middlewares may still add headers; aiohttp sends it); a streamed one (SSE) is sent
    as it comes and returned already sent. `body`: the request body when the caller has already
    read it."""
    start: Message | None = None
    single: web.Response | None = None
    streamed: web.StreamResponse | None = None
    finished = asyncio.Event()
    body_done = False
    read_body = body

    async def receive() -> Message:
        nonlocal body_done, read_body
        if read_body is not None:
            chunk, read_body, body_done = read_body, None, True
            return {"type": "http.request", "body": chunk, "more_body": False}
        if not body_done:
            chunk = await request.content.readany()
            body_done = request.content.at_eof() or not chunk
            return {"type": "http.request", "body": chunk, "more_body": not body_done}
        # After the body: block until the response is over or the client has gone
        # (`_until_done_or_gone` sets `finished` then).
        await finished.wait()
        return {"type": "http.disconnect"}

    async def begin_stream(start: Message) -> web.StreamResponse:
        response = web.StreamResponse(status=start["status"])
        for key, value in start.get("headers", []):
            response.headers.add(key.decode("latin-1"), value.decode("latin-1"))
        await response.prepare(request)
        return response

    async def send(message: Message) -> None:
        nonlocal start, single, streamed
        if message["type"] == "http.response.start":
            start = message
            if _is_event_stream(start):
                # Its head goes out now, as an ASGI server would send it: an SSE stream's
                # first event may be long in coming (a GET stream's first is a 15 s ping).
                streamed = await begin_stream(start)
        elif message["type"] == "http.response.body":
            if start is None:
                raise RuntimeError("ASGI app sent a body before the response start")
            if single is not None or finished.is_set():
                return  # the response is complete; ASGI says to ignore further messages
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if streamed is None and not more:
                single = _single(request, start, body)
                finished.set()
                return
            if streamed is None:
                streamed = await begin_stream(start)
            try:
                if body:
                    await streamed.write(body)
                if not more:
                    await streamed.write_eof()
                    finished.set()
            except ConnectionResetError:
                # The client has gone: as an ASGI server does, drop what is sent after that
                # (the app learns of it from `receive`), rather than fail the app mid-stream.
                finished.set()

    try:
        await _until_done_or_gone(
            app(http_scope(request, extra_scope or {}), receive, send), finished
        )
    except Exception:
        if streamed is None:
            raise  # nothing sent yet: the error middleware answers
        # The head (200) is out: an error answer can no longer be sent, and ending the stream
        # cleanly would pass a failure for a normal end. Drop the connection instead.
        log.exception("asgi_app_failed_mid_stream", path=request.path)
        if request.transport is not None:
            request.transport.abort()
        return streamed
    finally:
        finished.set()
    if single is not None:
        return single
    if streamed is not None:
        return streamed
    if start is None:
        raise RuntimeError("the ASGI app sent no response")
    return _single(request, start, b"")


async def _until_done_or_gone(running: Awaitable[None], finished: asyncio.Event) -> None:
    """Run the app to its end. A client that goes away is learnt from aiohttp, which cancels the
    handler's task (api/disconnects.py); the app itself is not cancelled, as no ASGI server
    cancels its app: it is told by `http.disconnect` from `receive()` (`finished` set) and its
    later sends are dropped, and the handler waits for it to end, then goes on cancelled. (The
    SDK relies on that: a session whose `initialize` is cancelled is discarded, even once its
    answer is out.) A task per request on the SDK's way, never on the hot paths."""
    task = asyncio.ensure_future(running)  # a task; awaited below, to its end
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            raise
        finished.set()
        try:
            await task  # a second cancel (the server stopping) cancels the app too
        except Exception:
            log.warning("asgi_app_failed_after_disconnect", exc_info=True)
        raise
