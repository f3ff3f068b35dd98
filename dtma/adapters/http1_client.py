"""Keep-alive HTTP/1.1 connections to one origin, for the relay's request-answer exchanges.

Why not aiohttp's client: on the project's 2-core machines a POST through `ClientSession` costs
the agent about 0.23 ms of CPU, three times what the exchange itself needs (a task for the body,
timers, cookie and header machinery; bench/gateway_latency.py and docs/benchmarks.md), and the
relay makes one per tool call. This client does only what the relay needs: one POST at a time per
connection, written in one piece; the answer read by `http1_reader.AnswerReader` (llhttp, within
bounds, strict framing); idle connections kept for reuse (newest first) and closed after
`idle_timeout`, before a typical server closes them (uvicorn: 5 s). A request is never retried:
a POST may not be repeated behind the caller's back (RFC 9110, 9.2.2). Redirects are answers like
any other, never followed. Plain `http` only: the toolbox's servers are reached on its own
network. An SSE answer is read to the end of its stream, which the server closes once it has
replied (as the MCP transport spec asks).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import cast
from urllib.parse import quote, urlsplit

from dtma.adapters.http1_reader import Answer, AnswerError, AnswerReader, AnswerTooLarge

__all__ = ["Answer", "AnswerError", "AnswerTooLarge", "Http1Origin"]

MAX_CONNECTIONS = 64  # open at once per origin; more callers wait for one
# Set by the client from the request itself; a caller's own would make the framing ambiguous.
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"  # RFC 3986 pchar and "/", with existing escapes kept


class _Connection(asyncio.Protocol):
    """One TCP connection carrying one exchange at a time. Used on the event loop only."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._transport: asyncio.Transport | None = None
        self._reader: AnswerReader | None = None
        self._answer: asyncio.Future[Answer] | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (create_connection makes one), though not always a subclass of
        # asyncio.Transport: uvloop's TCPTransport is not.
        self._transport = cast(asyncio.Transport, transport)

    def exchange(self, request: bytes) -> asyncio.Future[Answer]:
        """Send the request; the future gets the answer, or AnswerError when the connection
        fails or the answer cannot be read (the connection is then closed)."""
        assert self._transport is not None
        assert self._answer is None or self._answer.done(), "one exchange at a time"
        self._reader = AnswerReader(self._max_body)
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return self._answer

    def data_received(self, data: bytes) -> None:
        answer, reader = self._answer, self._reader
        if answer is None or answer.done() or reader is None:
            self.close()  # bytes nobody asked for: the stream is out of step
            return
        try:
            done = reader.feed(data)
        except AnswerError as exc:
            answer.set_exception(exc)
            self.close()
            return
        if done is not None:
            self._reader = None
            answer.set_result(done)

    def eof_received(self) -> bool:
        answer, reader = self._answer, self._reader
        if answer is not None and not answer.done() and reader is not None:
            try:
                answer.set_result(reader.end_of_stream())
            except AnswerError as exc:
                answer.set_exception(exc)
        self.closed = True
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is not None and not answer.done():
            reason = f": {exc}" if exc else ""
            answer.set_exception(AnswerError(f"the connection was lost before the answer{reason}"))

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class Http1Origin:
    """Connections to one `http://host:port`. Made and used on one event loop. Safe for many
    concurrent callers (each exchange gets a connection of its own); `close()` is idempotent.
    Each call writes the whole request at once (its body is bounded by the caller)."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        idle_timeout: float = 4.0,
        max_body: int,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not a plain http URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        target = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_PATH_SAFE + "?")
        self.target = target  # ASCII, no spaces: percent-encoded as aiohttp's client would
        authority = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = f"{authority}:{self.port}" if parts.port else authority
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._max_body = max_body
        self._idle: list[_Connection] = []  # oldest first
        self._busy: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None  # closes idle connections that expired
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def post(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """POST `body` to the URL's path and return the answer, whatever its status. Raises
        AnswerError when there is no readable answer and OSError/TimeoutError when the server
        cannot be reached; cancellation closes the connection in use."""
        request = self._request(headers, body)
        async with self._slots:
            if self._closed:
                raise AnswerError("the connection pool is closed")
            connection = self._take_idle() or await self._connect()
            self._busy.add(connection)
            completed: Answer | None = None
            try:
                completed = await connection.exchange(request)
                return completed
            finally:
                self._busy.discard(connection)
                if completed is not None and completed.reusable and not self._closed:
                    self._put_idle(connection)
                else:
                    connection.close()

    def _request(self, headers: Mapping[str, str], body: bytes) -> bytes:
        """The request's bytes. Raises ValueError for a header the client sets itself or one
        that is not one line of ASCII text."""
        if not _RESERVED.isdisjoint(name.lower() for name in headers):
            raise ValueError(f"the client sets {', '.join(sorted(_RESERVED))} itself")
        lines = [f"POST {self.target} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += ["Accept-Encoding: identity", f"Content-Length: {len(body)}", "", ""]
        head, breaks = "\r\n".join(lines), len(lines) - 1
        if not head.isascii() or "\0" in head or not head.count("\r") == head.count("\n") == breaks:
            raise ValueError("a header name or value is not one line of ASCII text")
        return head.encode("ascii") + body

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()  # the newest: the least likely to be closed by now
            if not connection.closed and now - connection.idle_since < self._idle_timeout:
                return connection
            connection.close()
        return None

    def _put_idle(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        if self._sweep is None:
            self._arm_sweep(self._idle_timeout)

    def _arm_sweep(self, delay: float) -> None:
        self._sweep = asyncio.get_running_loop().call_later(delay, self._close_expired)

    def _close_expired(self) -> None:
        """Close the idle connections past `idle_timeout`; come back for the next to expire
        (one timer per origin at most)."""
        self._sweep = None
        now = time.monotonic()
        while self._idle and (
            self._idle[0].closed or now - self._idle[0].idle_since >= self._idle_timeout
        ):
            self._idle.pop(0).close()
        if self._idle:
            self._arm_sweep(max(0.0, self._idle[0].idle_since + self._idle_timeout - now))

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_body), self.host, self.port
            )
        return connection

    async def close(self) -> None:
        """Close every connection, idle or busy (a busy call fails with AnswerError); calls
        waiting for a connection fail the same way."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle = []
