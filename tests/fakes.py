"""Hand-written fakes for unit tests of pure logic. Typed, no mock library."""

from __future__ import annotations

from collections.abc import Sequence

from dtma.domain.access import ToolCall
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
