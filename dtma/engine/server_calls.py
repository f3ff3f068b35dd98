"""The gateway's side of a server runner: tool calls and catalog requests through the server's
session, refused with the retryable ServerUnavailable unless the server is serving, counted in
flight (CallGuard) so that a removal can drain them and an exit can cut them.

ServerRunner (engine/server_runner.py) is the one class that sets these attributes.
Concurrency: event loop only; concurrent calls share the server's session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dtma.domain.containers import ObservedContainer
from dtma.engine.call_guard import CallGuard
from dtma.errors import ServerUnavailable
from dtma.ports import Probe
from dtma.spec.models import ServerSpec

DRAIN_TIMEOUT_S = 30.0  # a removed server's calls in flight get this long to finish
TOOL_CALL_TIMEOUT_S = 300.0
# The endpoint re-lists a server's tools at most this often (also when its tool names change),
# so that a changed description or schema is seen (gateway.pin) without a list per request.
TOOL_DEFS_MAX_AGE_S = 5.0


class ServerCalls:
    spec: ServerSpec
    container: ObservedContainer
    state: str
    health: str
    tools: list[str]
    _probe: Probe
    _calls: CallGuard
    _draining: bool
    _tool_defs: tuple[tuple[str, tuple[str, ...]], list[dict[str, Any]]] | None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def serving(self) -> bool:
        """Takes tool calls now: running, healthy, not being removed."""
        return self.state == "running" and self.health == "healthy" and not self._draining

    async def tool_defs(self, timeout: float) -> list[dict[str, Any]]:
        """The server's tools (wire JSON), cached per container and advertised tool names (the
        probe refreshes the names, so a changed tool set is fetched again), until the server
        sends `notifications/tools/list_changed`, and for at most TOOL_DEFS_MAX_AGE_S (a changed
        description or schema is seen by then even without a notification)."""
        window = int(time.monotonic() // TOOL_DEFS_MAX_AGE_S)
        changes = self._probe.tool_list_changes()
        key = (self.container.id, (*self.tools, f"#{window}/{changes}"))
        if self._tool_defs is not None and self._tool_defs[0] == key:
            return self._tool_defs[1]
        defs = await self._probe.tool_defs(timeout)
        self._tool_defs = (key, defs)
        return defs

    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any] | None,
        timeout: float = TOOL_CALL_TIMEOUT_S,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One tools/call. Concurrent calls share the server's session. Raises ServerUnavailable
        (retryable) when the server is not serving, or exits or restarts during the call: a
        crashed server's call never hangs. Counted in flight, so remove() can drain it.
        `envelope`: a 2026-07-28 client's own request envelope, which may be relayed as is."""
        return await self._guarded(
            lambda: self._probe.call_tool(tool, arguments, timeout, envelope)
        )

    async def catalog_request(
        self, method: str, params: dict[str, Any] | None, timeout: float = TOOL_CALL_TIMEOUT_S
    ) -> dict[str, Any]:
        """A prompts/resources request, guarded like call_tool."""
        return await self._guarded(lambda: self._probe.catalog_request(method, params, timeout))

    async def offers(self) -> frozenset[str] | None:
        """`prompts` / `resources` as the server's capabilities say; None when unknown."""
        return await self._probe.offers()

    async def _guarded(self, start: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        if not self.serving:
            raise ServerUnavailable(
                f"server {self.name} is {self._not_serving_because()}; retry shortly"
            )
        return await self._calls.run(
            start,
            lambda: ServerUnavailable(
                f"server {self.name} exited during the call; it is being restarted, retry"
            ),
        )

    def _not_serving_because(self) -> str:
        if self._draining:
            return "being replaced"
        if self.state != "running":
            return self.state
        return "starting" if self.health == "unknown" else self.health

    async def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Take no new calls and wait (at most `timeout`) for those in flight. Idempotent."""
        self._draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._calls.idle()
