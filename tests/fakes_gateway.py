"""Hand-written fakes for unit tests of the MCP endpoint's pieces: the tool-call and token
stores, a one-tool gateway, and a tool-contract host. Typed, no mock library."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from dtma.domain.access import ClientToken, ToolCall
from dtma.errors import (
    ServerUnavailable,
)
from dtma.gateway.routing import GatewayTool, ToolNotFound


class FailingCallStore:
    """A call store whose writes fail while `down` (the tool-call journal's error path)."""

    def __init__(self) -> None:
        self.down = True
        self.rows: list[ToolCall] = []

    async def append_calls(self, calls: Sequence[ToolCall]) -> None:
        if self.down:
            raise OSError("disk full (fake)")
        self.rows.extend(calls)

    async def calls(self, toolbox: str, since: int, limit: int) -> list[dict[str, object]]:
        return []


class MemoryTokenStore:
    """An in-memory TokenStore; `during_add` runs inside add_token, after the row is written
    (to interleave a toolbox deletion with an issue)."""

    def __init__(self, toolboxes: set[str]) -> None:
        self.toolboxes = toolboxes
        self.rows: dict[str, tuple[str, str, str]] = {}  # id -> (toolbox, name, hash)
        self.last_used: dict[str, float] = {}
        self.during_add: Callable[[], Awaitable[None]] | None = None
        # Run inside touch_tokens before the write lands, and inside client_tokens after the
        # rows are read (to interleave a flush of last_used with a listing).
        self.during_touch: Callable[[], Awaitable[None]] | None = None
        self.during_list: Callable[[], Awaitable[None]] | None = None

    async def add_token(
        self, token_id: str, toolbox: str, name: str, digest: str, limit: int
    ) -> ClientToken | None:
        if toolbox not in self.toolboxes:
            return None
        self.rows[token_id] = (toolbox, name, digest)
        if self.during_add is not None:
            await self.during_add()
        return ClientToken(token_id, toolbox, name, 0.0, None)

    async def client_tokens(self, toolbox: str | None = None) -> list[ClientToken]:
        rows = [
            ClientToken(i, tb, n, 0.0, self.last_used.get(i))
            for i, (tb, n, _) in self.rows.items()
            if toolbox in (None, tb)
        ]
        if self.during_list is not None:
            await self.during_list()
        return rows

    async def token_hashes(self) -> list[tuple[str, str, str]]:
        return [(h, i, tb) for i, (tb, _, h) in self.rows.items()]

    async def delete_token(self, toolbox: str, token_id: str) -> bool:
        return self.rows.pop(token_id, None) is not None

    async def touch_tokens(self, last_used: Mapping[str, float]) -> None:
        if self.during_touch is not None:
            await self.during_touch()
        for token_id, ts in last_used.items():
            if token_id in self.rows:
                self.last_used[token_id] = ts


ONE_TOOL_SCHEMA = {"type": "object", "properties": {"timezone": {"type": "string"}}}


class OneToolGateway:
    """A ToolGateway (gateway/routing.py) with one fixed tool, `time__now`; counts listings and
    records the envelope each call was given. `schema`: the tool's input schema."""

    def __init__(self, schema: Mapping[str, Any] = ONE_TOOL_SCHEMA) -> None:
        self.listings = 0
        self.listing_delay = 0.0  # seconds a listing takes (so that callers can overlap)
        self.envelopes: list[Mapping[str, Any] | None] = []
        self.schema = schema

    def knows(self, toolbox_id: str) -> bool:
        return True

    def signature(self, toolbox_id: str) -> frozenset[str]:
        return frozenset({"time__now"})

    def instances(self, toolbox_id: str) -> frozenset[tuple[str, str]]:
        return frozenset({("time", "c-1")})

    async def tools(self, toolbox_id: str) -> list[GatewayTool]:
        self.listings += 1
        await asyncio.sleep(self.listing_delay)
        definition = {"name": "now", "inputSchema": dict(self.schema)}
        return [GatewayTool("time__now", "time", "now", definition)]

    async def call(
        self,
        toolbox_id: str,
        name: str,
        arguments: dict[str, Any] | None,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        if name != "time__now":
            raise ToolNotFound(f"unknown tool {name!r}")
        self.envelopes.append(envelope)
        return {"content": [{"type": "text", "text": str(arguments)}], "resultType": "complete"}


class FakeContractRunner:
    """A server runner as the tool-contract check sees it: a name, `serving`, and its tools (or,
    with `tools=None`, a server whose tools cannot be read)."""

    def __init__(self, name: str, tools: list[dict[str, Any]] | None, serving: bool = True) -> None:
        self.name = name
        self.serving = serving
        self._tools = tools

    async def tool_defs(self, timeout: float) -> list[dict[str, Any]]:
        if self._tools is None:
            raise ServerUnavailable(f"server {self.name} is starting; retry shortly")
        return self._tools


class FakeContractHost:
    """A toolbox for engine/tool_contracts.py: an in-memory contract store and its events."""

    def __init__(self, toolbox_id: str = "tb") -> None:
        self.id = toolbox_id
        self.saved: dict[int, dict[str, tuple[str, dict[str, Any]]]] = {}
        self.pins: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    @property
    def repo(self) -> FakeContractHost:
        return self

    async def tool_contracts(
        self, toolbox_id: str, revision: int
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        return dict(self.saved.get(revision, {}))

    async def save_tool_contracts(
        self, toolbox_id: str, revision: int, contracts: Mapping[str, tuple[str, dict[str, Any]]]
    ) -> None:
        self.saved.setdefault(revision, {}).update(contracts)

    async def tool_pins(self, toolbox_id: str, revision: int) -> dict[str, Any]:
        return dict(self.pins.get(revision, {}))

    async def save_tool_pins(self, toolbox_id: str, revision: int, pins: Mapping[str, Any]) -> None:
        rows = self.pins.setdefault(revision, {})
        for server, server_pins in pins.items():
            rows.setdefault(server, server_pins)

    async def emit(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, **fields})
