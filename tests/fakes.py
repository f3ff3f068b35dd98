"""Hand-written fakes for unit tests of pure logic. Typed, no mock library."""

from __future__ import annotations

from typing import Any

from dtma.engine.gateway import GatewayTool
from dtma.errors import DockerUnavailable


class StaticReadiness:
    """Readiness with fixed reasons."""

    def __init__(self, reasons: list[str] | None = None) -> None:
        self.reasons = reasons or []

    def check(self) -> list[str]:
        return list(self.reasons)


class FakeEnginePing:
    """An engine that answers, or always fails when `up` is False."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.calls = 0

    async def ping(self) -> None:
        self.calls += 1
        if not self.up:
            raise DockerUnavailable("Docker engine unreachable: fake is down")


ONE_TOOL_SCHEMA = {"type": "object", "properties": {"timezone": {"type": "string"}}}


class OneToolGateway:
    """A ToolGateway (engine/gateway.py) with one fixed tool, `time__now`; counts listings."""

    def __init__(self) -> None:
        self.listings = 0

    def knows(self, toolbox_id: str) -> bool:
        return True

    def signature(self, toolbox_id: str) -> frozenset[str]:
        return frozenset({"time__now"})

    async def tools(self, toolbox_id: str) -> list[GatewayTool]:
        self.listings += 1
        definition = {"name": "now", "inputSchema": ONE_TOOL_SCHEMA}
        return [GatewayTool("time__now", "time", "now", definition)]

    async def call(
        self, toolbox_id: str, name: str, arguments: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": str(arguments)}]}
