"""Hand-written fakes for unit tests of pure logic. Typed, no mock library."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from dtma.domain.access import ClientToken, ToolCall
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


class MemoryTokenStore:
    """An in-memory TokenStore; `during_add` runs inside add_token, after the row is written
    (to interleave a toolbox deletion with an issue)."""

    def __init__(self, toolboxes: set[str]) -> None:
        self.toolboxes = toolboxes
        self.rows: dict[str, tuple[str, str, str]] = {}  # id -> (toolbox, name, hash)
        self.during_add: Callable[[], Awaitable[None]] | None = None

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
        return [
            ClientToken(i, tb, n, 0.0, None)
            for i, (tb, n, _) in self.rows.items()
            if toolbox in (None, tb)
        ]

    async def token_hashes(self) -> list[tuple[str, str, str]]:
        return [(h, i, tb) for i, (tb, _, h) in self.rows.items()]

    async def delete_token(self, toolbox: str, token_id: str) -> bool:
        return self.rows.pop(token_id, None) is not None

    async def touch_tokens(self, last_used: Mapping[str, float]) -> None:
        return None
