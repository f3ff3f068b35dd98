"""gateway/asgi.py on a real aiohttp server, with small ASGI apps: a one-piece answer is returned to
aiohttp unsent (so middlewares still add headers, and head and body leave together), a
streamed one is sent as it comes (its head at once), and the request body reaches the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dtma.api.middleware import error_middleware
from dtma.gateway.asgi import serve_asgi

Send = Callable[[dict[str, Any]], Awaitable[None]]


async def echo(scope: Any, receive: Callable[[], Awaitable[Any]], send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-type", b"application/json"), (b"content-length", b"999")]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": scope["method"].encode() + b":" + body})


async def stream(scope: Any, receive: Callable[[], Awaitable[Any]], send: Send) -> None:
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for part in (b"data: 1\n\n", b"data: 2\n\n"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


RELEASE: dict[str, Any] = {}


async def quiet_stream(scope: Any, receive: Callable[[], Awaitable[Any]], send: Send) -> None:
    """An SSE stream whose first event waits for the test (as a GET stream's first ping)."""
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await RELEASE["event"].wait()
    await send({"type": "http.response.body", "body": b"data: late\n\n"})


async def fails_mid_stream(scope: Any, receive: Callable[[], Awaitable[Any]], send: Send) -> None:
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    raise RuntimeError("the app failed after its head went out")


async def empty(scope: Any, receive: Callable[[], Awaitable[Any]], send: Send) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": []})


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    @web.middleware
    async def stamp(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        response.headers["X-Stamp"] = "added-after"  # only reaches a response not yet sent
        return response

    app = web.Application(middlewares=[stamp, error_middleware()])
    apps = {
        "echo": echo,
        "stream": stream,
        "empty": empty,
        "quiet": quiet_stream,
        "fails": fails_mid_stream,
    }

    async def handle(request: web.Request) -> web.StreamResponse:
        return await serve_asgi(apps[request.match_info["app"]], request)

    app.router.add_route("*", "/{app}", handle)
    c = TestClient(TestServer(app))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()


async def test_a_one_piece_answer_is_sent_by_aiohttp_with_the_apps_headers(
    client: TestClient,
) -> None:
    resp = await client.post("/echo", data=b"x" * 100_000)
    assert resp.status == 201
    assert await resp.read() == b"POST:" + b"x" * 100_000
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Content-Length"] == str(len(b"POST:") + 100_000)  # not the app's 999
    assert resp.headers["X-Stamp"] == "added-after"


async def test_a_streamed_answer_is_sent_as_it_comes(client: TestClient) -> None:
    resp = await client.get("/stream")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert await resp.read() == b"data: 1\n\ndata: 2\n\n"
    assert "X-Stamp" not in resp.headers  # sent before the middleware saw it


async def test_an_event_streams_head_is_sent_before_its_first_event(client: TestClient) -> None:
    RELEASE["event"] = asyncio.Event()
    async with asyncio.timeout(5):  # with the head held back, this would wait for the event
        resp = await client.get("/quiet")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    RELEASE["event"].set()
    assert await resp.read() == b"data: late\n\n"


async def test_an_app_failing_mid_stream_cuts_the_connection(client: TestClient) -> None:
    resp = await client.get("/fails")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):  # a cut stream, not a clean end
        await resp.read()
    # On the wire: the one head, the first event, then nothing; not the error middleware's
    # 500 written after the 200 into the same stream.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /fails HTTP/1.1\r\nHost: t\r\n\r\n")
    async with asyncio.timeout(5):
        wire = await reader.read(-1)
    writer.close()
    assert wire.startswith(b"HTTP/1.1 200 ")
    assert wire.count(b"HTTP/1.1") == 1, wire
    assert b"data: 1" in wire


async def test_a_start_without_a_body_is_an_empty_answer(client: TestClient) -> None:
    resp = await client.delete("/empty")
    assert resp.status == 202
    assert await resp.read() == b""
