"""The engine's narrow port for a toolbox's MCP endpoint: which servers serve which tools now,
and "call this server".

"Now" is the serving revision (`ToolboxRunner.servers`), which a rollout swaps at the moment its
gate passes and never touches when a revision fails; only servers that are running, healthy and
not draining count. A removed server drains its calls in flight first (`ServerRunner.remove`).
Tools are exported as `<server>__<tool>` (a server name is a DNS label, so it holds no `__` and
the first `__` splits unambiguously), filtered by the serving spec's `gateway.tools`, and by
`gateway.pin` (gateway/pinning.py): a tool whose definition changed since its revision's gate is
withheld and refused under `block`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from dtma.engine.server_runner import ServerRunner
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import NotFound, ServerUnavailable
from dtma.gateway.pinning import PinGuard, ToolDefinitionChanged, policy_of
from dtma.spec.models import AccessRule, ToolFilter

SEPARATOR = "__"
LIST_TIMEOUT_S = 10.0


class ToolNotFound(NotFound):
    """No serving server offers this tool, or the toolbox's gateway filter hides it."""

    code = "tool_not_found"


class ToolDenied(ToolNotFound):
    """The toolbox's gateway filter hides this tool (told to clients as an unknown tool)."""


@dataclass(frozen=True)
class GatewayTool:
    name: str  # exported: <server>__<tool>
    server: str
    tool: str
    definition: dict[str, Any]  # the server's own tool JSON (schemas, annotations) unchanged


def exported_name(server: str, tool: str) -> str:
    return f"{server}{SEPARATOR}{tool}"


def split_name(name: str) -> tuple[str, str] | None:
    server, sep, tool = name.partition(SEPARATOR)
    return (server, tool) if sep and server and tool else None


_NO_FILTER = ToolFilter()


def _named(tb: ToolboxRunner, server: str) -> bool:
    """Whether the serving spec, or the revision under its gate, has a server of that name, or
    may have: a toolbox with no spec loaded yet (the agent's start-up recovery has not reached
    it, or its first revision is not in) cannot say that a server is unknown."""
    if server in tb.gate_runners:
        return True
    if tb.spec is None:
        return not tb.gate_runners  # under its first gate, that revision names the servers
    return any(s.name == server for s in tb.spec.servers)


def _tool_filter(tb: ToolboxRunner) -> ToolFilter:
    gateway = tb.spec.gateway if tb.spec is not None else None
    return gateway.tools if gateway is not None else _NO_FILTER


class ToolGateway(Protocol):
    """What the API's MCP endpoint may ask of the engine."""

    def knows(self, toolbox_id: str) -> bool: ...
    def access_rules(self, toolbox_id: str) -> list[AccessRule]: ...
    def signature(self, toolbox_id: str) -> frozenset[str]: ...
    async def tools(self, toolbox_id: str) -> list[GatewayTool]: ...
    async def call(
        self,
        toolbox_id: str,
        name: str,
        arguments: dict[str, Any] | None,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...


class EngineGateway:
    """ToolGateway over the agent's toolbox runners. Reads them live on every request; holds no
    state of its own but the pins' cache (PinGuard). Safe to call from any task on the loop."""

    def __init__(self, runners: Mapping[str, ToolboxRunner]) -> None:
        self._runners = runners
        self._pins = PinGuard(runners)

    def knows(self, toolbox_id: str) -> bool:
        """Whether the toolbox is there for MCP clients: not once its deletion has begun (its
        servers are being stopped for good; a client gets 404 rather than an error that says
        retry, and the endpoint's sessions end)."""
        tb = self._runners.get(toolbox_id)
        return tb is not None and tb.phase != "deleting"

    def access_rules(self, toolbox_id: str) -> list[AccessRule]:
        """The serving spec's `gateway.access`: what JWT callers' claims narrow the tools to."""
        tb = self._runners.get(toolbox_id)
        gateway = tb.spec.gateway if tb is not None and tb.spec is not None else None
        return gateway.access if gateway is not None else []

    def _serving(self, toolbox_id: str) -> tuple[list[ServerRunner], ToolFilter]:
        tb = self._runners.get(toolbox_id)
        if tb is None:
            raise NotFound(f"toolbox {toolbox_id} not found")
        return [r for r in tb.servers.values() if r.serving], _tool_filter(tb)

    def signature(self, toolbox_id: str) -> frozenset[str]:
        """The exported names offered now, from the probes' tool names less those pinning
        withheld last (cheap, no I/O): when it changes, clients are told the list changed."""
        if toolbox_id not in self._runners:
            return frozenset()
        runners, allowed = self._serving(toolbox_id)
        tb = self._runners[toolbox_id]
        names: list[str] = []
        for r in runners:
            hidden = self._pins.last_withheld(tb, r)
            names.extend(exported_name(r.name, t) for t in r.tools if t not in hidden)
        return frozenset(n for n in names if allowed.permits(n))

    def instances(self, toolbox_id: str) -> frozenset[tuple[str, str]]:
        """(server, container id) of every serving server (cheap, no I/O): when it changes, the
        prompts and resources on offer may have, and clients are told so."""
        if toolbox_id not in self._runners:
            return frozenset()
        return frozenset((r.name, r.container.id) for r in self._serving(toolbox_id)[0])

    async def tools(self, toolbox_id: str) -> list[GatewayTool]:
        """Every permitted tool of every serving server, in server order. A server whose list
        cannot be read right now is left out (it is restarting or going away)."""
        runners, allowed = self._serving(toolbox_id)
        tb = self._runners[toolbox_id]
        lists = await asyncio.gather(
            *(r.tool_defs(LIST_TIMEOUT_S) for r in runners), return_exceptions=True
        )
        found: list[GatewayTool] = []
        for runner, defs in zip(runners, lists, strict=True):
            if isinstance(defs, BaseException):
                if isinstance(defs, Exception):
                    continue
                raise defs
            withheld = await self._pins.withheld(tb, runner, defs)
            for d in defs:
                name = exported_name(runner.name, str(d.get("name", "")))
                if allowed.permits(name) and d.get("name") not in withheld:
                    found.append(GatewayTool(name, runner.name, str(d["name"]), d))
        return found

    async def call(
        self,
        toolbox_id: str,
        name: str,
        arguments: dict[str, Any] | None,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Route one tools/call to the server that serves it now. Raises ToolNotFound (unknown or
        filtered out), ToolDefinitionChanged (pinned) or ServerUnavailable (retryable).
        `envelope`: see ServerRunner.call_tool."""
        parts = split_name(name)
        if parts is None:
            raise ToolNotFound(f"unknown tool {name!r}: names are <server>{SEPARATOR}<tool>")
        tb = self._runners.get(toolbox_id)
        if tb is None:
            raise NotFound(f"toolbox {toolbox_id} not found")
        if not _tool_filter(tb).permits(name):
            raise ToolDenied(f"unknown tool {name!r}")
        server, tool = parts
        runner = tb.servers.get(server)
        if runner is None:
            if _named(tb, server):  # between runners (recovery, a stop-first rollout): retry
                raise ServerUnavailable(f"server {server!r} is not running now; retry shortly")
            raise ToolNotFound(f"unknown tool {name!r}: no server {server!r} in this toolbox")
        unnamed = runner.serving and runner.tools and tool not in runner.tools
        if unnamed and not await _listed_now(runner, tool):
            raise ToolNotFound(f"unknown tool {name!r}")
        if runner.serving and policy_of(tb) != "off":
            # Cached per container for a few seconds (ServerCalls.tool_defs): the hot path
            # re-lists at most that often.
            withheld = await self._pins.withheld(tb, runner, await runner.tool_defs(LIST_TIMEOUT_S))
            if tool in withheld:
                raise ToolDefinitionChanged(
                    f"tool {name!r} changed its definition ({withheld[tool].replace('_', ' ')}) "
                    "since this toolbox's revision passed its gate; gateway.pin is block, so it "
                    "is refused until a new revision is applied"
                )
        # ServerUnavailable when not serving
        return await runner.call_tool(tool, arguments, envelope=envelope)


async def _listed_now(runner: ServerRunner, tool: str) -> bool:
    """Whether the server's current listing names `tool`. The probes' tool names (`runner.tools`)
    lag a change that the listing (ServerCalls.tool_defs, fetched again on the server's
    `tools/list_changed`) has shown a client already: a tool a client has just seen listed is
    callable at once. The listing is cached, so a name the server does not have costs at most
    one listing per cache period; an unreadable listing refuses the name as before."""
    try:
        defs = await runner.tool_defs(LIST_TIMEOUT_S)
    except Exception:
        return False
    return any(d.get("name") == tool for d in defs)
