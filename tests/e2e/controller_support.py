"""A test controller: an aiohttp app, in a thread of its own, that records the heartbeats real
agent processes send it and answers them as the test tells it to (ok, resync, down, 5xx, 401,
garbage, a hang, a redirect)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.conftest import free_port

MODES = ("ok", "5xx", "401", "garbage", "hang", "redirect")


@dataclass(frozen=True)
class Received:
    at: float  # time.time() when the body was read
    agent: str
    authorization: str | None
    raw: bytes
    body: dict[str, Any]
    mode: str  # how it was answered


class TestController:
    __test__ = False  # not a test class for pytest

    def __init__(self, token: str) -> None:
        self.token = token
        self.port = free_port()
        self.mode = "ok"
        self.resync: set[str] = set()  # agents whose next heartbeat is answered {"resync": true}
        self.followed = 0  # requests to the redirect target: must stay 0
        self.down = False
        self.stopping = False
        self._got: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control (from the test's thread) ------------------------------------------------------

    def start(self) -> TestController:
        self._thread.start()
        self._call(self._setup)
        self._call(self._listen)
        return self

    def go_down(self) -> None:
        """Stop listening: new connections are refused, and a request on a connection kept
        alive from before is dropped unanswered, until come_back()."""
        self.down = True
        self._call(self._unlisten)

    def come_back(self) -> None:
        self._call(self._listen)
        self.down = False

    def stop(self) -> None:
        self.stopping = True  # ends hanging handlers
        self._call(self._cleanup)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def received(self, agent: str | None = None, since: float = 0.0) -> list[Received]:
        with self._lock:
            return [r for r in self._got if r.at >= since and (agent is None or r.agent == agent)]

    def _call(self, coro: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro(), self._loop).result(30)

    # -- the app (on its own loop) -------------------------------------------------------------

    async def _setup(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/agents/{agent}/heartbeat", self._heartbeat)
        app.router.add_route("*", "/elsewhere", self._elsewhere)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _unlisten(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.followed += 1
        return web.json_response({})

    async def _heartbeat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        agent = request.match_info["agent"]
        mode = "down" if self.down else self.mode
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        with self._lock:
            self._got.append(
                Received(time.time(), agent, request.headers.get("Authorization"), raw, body, mode)
            )
        if mode == "down":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=503)  # never written: the connection is gone
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401)
        if mode == "5xx":
            return web.Response(status=503, text="try later")
        if mode == "401":
            return web.Response(status=401)
        if mode == "garbage":
            return web.Response(status=200, text="<html>not json</html>")
        if mode == "redirect":
            raise web.HTTPTemporaryRedirect(f"{self.url}/elsewhere")
        if mode == "hang":  # until the controller stops: the agent has given up long before
            while not self.stopping:  # noqa: ASYNC110 - set from the test's thread
                await asyncio.sleep(0.1)
            return web.Response(status=503)
        if agent in self.resync:
            self.resync.discard(agent)
            return web.json_response({"resync": True})
        return web.json_response({})
