"""What a client's disconnect does to the request it was making.

The agent's server runs with aiohttp's `handler_cancellation` (`app_runner`): when a client's
connection is lost, aiohttp's protocol (`RequestHandler.connection_lost`) cancels the task that
runs its request's handler. That is how the MCP endpoint learns, with no timer and no polling,
that a client has gone: on the 2026-07-28 revision closing the connection is how a client
cancels a call, and an SSE GET stream ends with its client.

The control API's handlers must never be cut halfway by it (an apply, a delete, a token grant
is done whole or not at all, whoever is still listening). So only the handlers marked
`cancel_on_disconnect` are cancelled; every other one runs shielded (`DisconnectShield`): in a
task of its own that the disconnect does not reach, to its end, as it did before the option was
on. Cancellable: the MCP endpoint's POST and GET, and the event stream (`GET /v1/events`,
read-only). Not: the MCP DELETE (the SDK ends the session whole), and everything else.

Contract: the shield costs a task per API request (never per MCP request). A shielded handler
whose client went is watched (a failure is logged and counted, `watch_task`); those still
running when the app is cleaned up (after aiohttp's own shutdown wait) are cancelled and awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

from aiohttp import web

from dtma.cancellation import cancel_and_wait
from dtma.engine.supervisor import watch_task

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
_MARK = "_dtma_cancel_on_disconnect"


def cancel_on_disconnect(handler: H) -> H:
    """Mark a route handler as one that a client's disconnect cancels (see the module)."""
    setattr(handler, _MARK, True)
    return handler


def cancels_on_disconnect(handler: Any) -> bool:
    return getattr(handler, _MARK, False) is True


def app_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner the agent serves `app` with: aiohttp cancels a handler whose client has gone
    (its `handler_cancellation`; off by default since aiohttp 3.7)."""
    return web.AppRunner(app, handler_cancellation=True, **kwargs)


class DisconnectShield:
    """The middleware that shields every handler not marked `cancel_on_disconnect` (put it
    first: the whole chain of middlewares runs inside the shield), and `close` for the app's
    cleanup. Used on the event loop only."""

    def __init__(self) -> None:
        self._orphans: set[asyncio.Task[web.StreamResponse]] = set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if cancels_on_disconnect(request.match_info.handler):
            return await handler(request)
        handling = cast(Coroutine[Any, Any, web.StreamResponse], handler(request))
        task = asyncio.create_task(handling)  # awaited here; watched once orphaned
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():  # its client has gone (or the server is stopping): let it end
                self._orphans.add(task)
                task.add_done_callback(self._orphans.discard)
                watch_task(task, f"{request.method} {request.path}", "api_request")
            raise

    async def close(self, _: web.Application | None = None) -> None:
        """Cancel and await the shielded handlers still running. Idempotent."""
        for task in list(self._orphans):
            await cancel_and_wait(task)
