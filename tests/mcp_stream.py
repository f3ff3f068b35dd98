"""A handshake-era MCP session opened by hand, for tests of the endpoint's GET streams: the
`initialize` request, the `initialized` notification, and the GET stream they open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2

HANDSHAKE_VERSION = "2025-11-25"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": HANDSHAKE_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
ACCEPT_BOTH = "application/json, text/event-stream"


@asynccontextmanager
async def get_stream(url: str, headers: dict[str, str]) -> AsyncIterator[httpx2.Response]:
    """Initialize a session at `url` (with `headers` on every request, e.g. a token) and yield
    its GET stream, open: the response whose body the server keeps open for notifications."""
    headers = {**headers, "Accept": ACCEPT_BOTH}
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30)) as http:
        answer = await http.post(url, json=INITIALIZE, headers=headers)
        assert answer.status_code == 200, answer.text
        headers["Mcp-Session-Id"] = answer.headers["mcp-session-id"]
        headers["MCP-Protocol-Version"] = HANDSHAKE_VERSION
        answer = await http.post(url, json=INITIALIZED, headers=headers)
        assert answer.status_code == 202, answer.text
        async with http.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}) as s:
            if s.status_code != 200:
                raise AssertionError(f"{s.status_code}: {(await s.aread())!r}")
            assert s.headers["content-type"].startswith("text/event-stream")
            yield s


async def stream_ends(stream: httpx2.Response, within: float) -> bool:
    """Whether the stream's body ends (cleanly or not) within `within` seconds. Only for a
    stream that is expected to end: when it does not, the read is cancelled, and httpcore
    closes a response (and its connection) whose read is cancelled. To check that a stream
    stays open, use `watching`."""
    try:
        async with asyncio.timeout(within):
            async for _ in stream.aiter_bytes():
                pass
    except TimeoutError:
        return False
    except httpx2.HTTPError:
        return True
    return True


class StreamWatch:
    """Reads a stream's body in a task of its own, so that asking whether it has ended never
    cuts it (see `stream_ends`)."""

    def __init__(self, stream: httpx2.Response) -> None:
        self._reading = asyncio.create_task(stream_ends(stream, within=3600))

    async def ends_within(self, seconds: float) -> bool:
        done, _ = await asyncio.wait({self._reading}, timeout=seconds)
        if done:
            self._reading.result()  # an error other than the stream's end is raised, not taken
        return bool(done)

    async def stop(self) -> None:
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading


@asynccontextmanager
async def watching(*streams: httpx2.Response) -> AsyncIterator[list[StreamWatch]]:
    """A `StreamWatch` on each stream, stopped (its read cancelled) on the way out."""
    watches = [StreamWatch(stream) for stream in streams]
    try:
        yield watches
    finally:
        for watch in watches:
            await watch.stop()
