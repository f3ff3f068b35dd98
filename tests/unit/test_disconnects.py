"""A client's disconnect (api/disconnects.py): served as the agent serves (aiohttp's
`handler_cancellation`), it cancels the MCP endpoint's POST and GET handlers through aiohttp's
own `connection_lost`, with no timer and no task of the endpoint's; every other handler (the
control API, the MCP DELETE) is shielded and runs to its end."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import httpx2
import pytest
from aiohttp import web
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from dtma.api.app import create_app
from dtma.api.disconnects import app_runner, cancel_on_disconnect, cancels_on_disconnect
from dtma.api.mcp_endpoint import MCP_ENDPOINTS, add_mcp_routes
from dtma.gateway.asgi import serve_asgi
from dtma.gateway.call_journal import CallJournal
from dtma.observability.metrics import Metrics
from tests.fakes import StaticReadiness
from tests.fakes_gateway import FailingCallStore, OneToolGateway
from tests.unit.test_mcp_exchange import PATH, BlockingGateway, call, headers
from tests.unserved_app import unserved_app

TOKEN = "t" * 32


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """`app` served as the agent serves it; yields its base URL."""
    runner = app_runner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class Handlers:
    """Notes the tasks that run the app's handlers (a middleware, first), and every timer the
    loop arms while one of them is the current task."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.timers: list[Callable[..., Any]] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        return await handler(request)

    @contextlib.contextmanager
    def watching_timers(
        self, monkeypatch: pytest.MonkeyPatch, until: asyncio.Event | None = None
    ) -> Iterator[None]:
        """Note the timers armed in the handlers' tasks until `until` is set."""
        loop = asyncio.get_running_loop()
        real = loop.call_at

        def call_at(when: float, callback: Callable[..., Any], *args: Any, **kw: Any) -> Any:
            if asyncio.current_task() in self.tasks and not (until and until.is_set()):
                self.timers.append(callback)
            return real(when, callback, *args, **kw)

        monkeypatch.setattr(loop, "call_at", call_at)
        yield
        monkeypatch.undo()


async def hang_up(request: asyncio.Task[Any]) -> None:
    request.cancel()  # the client closes its connection
    with contextlib.suppress(asyncio.CancelledError):
        await request


async def test_a_hot_path_call_is_cancelled_by_aiohttp_on_connection_lost_with_no_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a watch timer per call checked the transport every 0.5 s. The call journal
    records the call as cancelled."""
    handlers, gateway = Handlers(), BlockingGateway()
    journal = CallJournal(FailingCallStore(), Metrics(), lambda _: frozenset({"time__now"}))
    app = web.Application(middlewares=[handlers.middleware])
    add_mcp_routes(app, gateway, started=lambda: True, audit=journal)
    async with served(app) as base, aiohttp.ClientSession() as http:
        await app[MCP_ENDPOINTS].get("tb")  # started (its start arms timers of its own)
        # (Once cancelled, the SDK's cleanup of the call's connection arms a bound of its own.)
        with handlers.watching_timers(monkeypatch, until=gateway.cancelled):
            request = asyncio.create_task(
                http.post(base + PATH, data=json.dumps(call()), headers=headers())
            )
            await asyncio.wait_for(gateway.started.wait(), 5)
            (handler,) = handlers.tasks
            await hang_up(request)
            await asyncio.wait_for(gateway.cancelled.wait(), 5)
        assert handlers.timers == []
        await asyncio.wait({handler}, timeout=5)
        assert handler.cancelled()  # the CancelledError went on to aiohttp: nobody is answered
    assert [c.outcome for c in journal._pending] == ["cancelled"]


async def test_the_sdks_way_hears_of_a_disconnect_from_receive_with_no_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ASGI app served by serve_asgi that waits on `receive()` after the body (as the SDK's
    SSE responses do) gets `http.disconnect` once its client goes, as from an ASGI server, and
    is not cancelled; no `wait_for` (a timer) is armed to find out (before: one every 0.5 s)."""
    handlers = Handlers()
    waiting, outcome = asyncio.Event(), asyncio.get_running_loop().create_future()

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        handlers.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        await receive()  # the body
        waiting.set()
        try:
            outcome.set_result(await receive())
        except asyncio.CancelledError:
            outcome.set_result("cancelled")
            raise

    async def handle(request: web.Request) -> web.StreamResponse:
        return await serve_asgi(asgi_app, request)

    app = web.Application(middlewares=[handlers.middleware])
    app.router.add_post("/asgi", cancel_on_disconnect(handle))
    async with served(app) as base, aiohttp.ClientSession() as http:
        with handlers.watching_timers(monkeypatch):
            request = asyncio.create_task(http.post(base + "/asgi", data=b"{}"))
            await asyncio.wait_for(waiting.wait(), 5)
            await asyncio.sleep(0.05)  # (a poll would arm its timer here)
            await hang_up(request)
            assert await asyncio.wait_for(outcome, 5) == {"type": "http.disconnect"}
        assert handlers.timers == []


async def test_an_sse_answer_read_whole_lets_the_app_finish_when_the_client_hangs_up() -> None:
    """The SDK's `initialize` on the handshake era: its SSE answer is out, the client reads it
    and closes the connection while the app is still winding down. The app must run to its end
    (the SDK discards a session whose opening request was cancelled: the client's next request
    would get 404 "Session not found")."""
    answered, release = asyncio.Event(), asyncio.Event()
    ends: list[str] = []

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": False})
        answered.set()
        try:
            await release.wait()  # the SDK's bookkeeping after its answer
        except asyncio.CancelledError:
            ends.append("cancelled")
            raise
        ends.append("done")

    async def handle(request: web.Request) -> web.StreamResponse:
        return await serve_asgi(asgi_app, request)

    app = web.Application()
    app.router.add_post("/asgi", cancel_on_disconnect(handle))
    hangs_up = aiohttp.TCPConnector(force_close=True)  # closes once the answer is read
    async with served(app) as base, aiohttp.ClientSession(connector=hangs_up) as http:
        async with http.post(base + "/asgi", data=b"{}") as response:
            assert await response.read() == b"data: {}\n\n"
        await asyncio.wait_for(answered.wait(), 5)
        await asyncio.sleep(0.2)  # (the disconnect reaches the server)
        release.set()
        for _ in range(250):
            if ends:
                break
            await asyncio.sleep(0.02)
    assert ends == ["done"]


def control_api() -> web.Application:
    """The agent's whole app, never served."""
    return unserved_app(TOKEN)


def test_only_the_mcp_endpoints_post_and_get_and_the_event_stream_are_cancellable() -> None:
    """Every other route, the control API's and the MCP DELETE, runs shielded (see
    api/disconnects.py): nothing but a call, a stream or a read is cut by a disconnect."""
    cancellable = {
        (route.method, route.resource.canonical if route.resource else "")
        for route in control_api().router.routes()
        if cancels_on_disconnect(route.handler)
    }
    assert cancellable == {
        ("POST", "/v1/toolboxes/{id}/mcp"),
        ("GET", "/v1/toolboxes/{id}/mcp"),
        ("GET", "/v1/events"),
        ("HEAD", "/v1/events"),
    }


async def test_a_control_api_handler_runs_to_its_end_when_its_client_goes() -> None:
    """A PUT whose client hangs up halfway is finished all the same (nothing half-done); the
    same handler marked cancellable is cancelled, which shows the disconnect did arrive."""
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[web.Request] = []
    ends: list[str] = []

    async def slow(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            ends.append(f"{request.method} cancelled")
            raise
        ends.append(f"{request.method} done")
        return web.json_response({})

    async def slow_cancellable(request: web.Request) -> web.StreamResponse:
        return await slow(request)

    async def hung_up_on_the_server(request: asyncio.Task[Any]) -> None:
        """The client hangs up; returns once aiohttp has seen the connection lost."""
        await asyncio.wait_for(started.wait(), 5)
        started.clear()
        await hang_up(request)
        for _ in range(250):
            if seen[-1].transport is None:  # (aiohttp's connection_lost has run)
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the server never saw the connection lost")

    async def ended(count: int) -> None:
        for _ in range(250):
            if len(ends) == count:
                return
            await asyncio.sleep(0.02)

    app = create_app(token=TOKEN, readiness=StaticReadiness())  # its middlewares, shield first
    app.router.add_put("/v1/slow", slow)
    app.router.add_post("/v1/slow", cancel_on_disconnect(slow_cancellable))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with served(app) as base, aiohttp.ClientSession() as http:
        for count, method in enumerate(("PUT", "POST"), 1):
            request = asyncio.create_task(http.request(method, base + "/v1/slow", headers=auth))
            await hung_up_on_the_server(request)
            release.set()
            await ended(count)
            release.clear()
        # A shielded handler still running at the app's cleanup is ended there.
        request = asyncio.create_task(http.put(base + "/v1/slow", headers=auth))
        await hung_up_on_the_server(request)
    assert ends == ["PUT done", "POST cancelled", "PUT cancelled"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_official_sdk_client_keeps_its_session_in_both_eras(mode: str) -> None:
    """The SDK's client, served as the agent serves: its handshake-era session survives the
    connections the client closes once it has read an answer (found by bench/gateway_latency.py
    in legacy mode: 'Session not found' when the SDK's `initialize` was cancelled)."""
    app = web.Application()
    add_mcp_routes(app, OneToolGateway(), started=lambda: True)
    async with (
        served(app) as base,
        httpx2.AsyncClient(timeout=httpx2.Timeout(30)) as http,
        Client(streamable_http_client(base + PATH, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
    ):
        assert [t.name for t in (await client.list_tools()).tools] == ["time__now"]
        for _ in range(3):
            assert not (await client.call_tool("time__now", {})).is_error
