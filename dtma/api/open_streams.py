"""The MCP endpoint's open GET streams, by the client token that opened them.

Every other request is checked against the token index as it arrives, so a revoked token is
refused at its next request; a GET stream (the handshake era's channel for server-to-client
notifications) is one request that lasts as long as the client keeps it. `cut(token_ids)`
closes the connections of the streams those tokens opened, so revocation reaches them too:
aiohttp then cancels the stream's handler and so the SDK's stream (api/disconnects.py), as
when a client hangs up. A tool call in flight is not cut: it was allowed when it came, and ends
within the call timeout. Loop-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator

import structlog
from aiohttp import web

from dtma.domain.oauth import JwtCaller

log = structlog.get_logger(__name__)


class OpenStreams:
    def __init__(self) -> None:
        # token id -> {id(request): request} (an aiohttp Request is a mapping, not hashable)
        self._by_token: dict[str, dict[int, web.Request]] = {}

    @contextlib.contextmanager
    def held(self, token_id: str, request: web.Request) -> Iterator[None]:
        """Track `request` as a stream of `token_id` while the block runs. Enter it before the
        handler's first await: the token was verified in the same step of the loop, so no
        revocation can fall between the check and the tracking."""
        streams = self._by_token.setdefault(token_id, {})
        streams[id(request)] = request
        try:
            yield
        finally:
            streams.pop(id(request), None)
            if not streams and self._by_token.get(token_id) is streams:
                del self._by_token[token_id]

    def cut(self, token_ids: Iterable[str], reason: str = "token revoked") -> int:
        """Close the connections of the streams these tokens hold; returns how many."""
        count = 0
        for token_id in token_ids:
            for request in self._by_token.pop(token_id, {}).values():
                if request.transport is not None and not request.transport.is_closing():
                    request.transport.abort()  # at once: not even what is buffered goes out
                    count += 1
        if count:
            log.info("mcp_streams_cut", count=count, reason=reason)
        return count

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_token.values())


def held_until_expiry(
    streams: OpenStreams, caller: JwtCaller
) -> Callable[[str, web.Request], contextlib.AbstractContextManager[None]]:
    """As `streams.held`, for a GET stream a JWT opened, closed when the JWT expires: every
    other request is checked as it comes, but a stream is one request that lasts. Enter
    before the first await (as OpenStreams.held)."""

    @contextlib.contextmanager
    def held(_: str, request: web.Request) -> Iterator[None]:
        key = f"jwt-{id(request)}"  # a key of its own: no one revokes a JWT
        delay = max(0.0, caller.expires_at - time.time())
        loop = asyncio.get_running_loop()
        timer = loop.call_later(delay, streams.cut, (key,), "token expired")
        try:
            with streams.held(key, request):
                yield
        finally:
            timer.cancel()

    return held
