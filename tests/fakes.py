"""Hand-written fakes for unit tests of pure logic. Typed, no mock library."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dtma.errors import DockerUnavailable, ServerUnavailable


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

    async def emit(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, **fields})
