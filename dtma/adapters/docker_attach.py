"""An MCP transport over a container's stdin/stdout, through the Engine API's attach.

The container must be created with stdin_open=True and tty=False. Output arrives in multiplexed
frames (an 8-byte header: stream type, 3 zero bytes, big-endian payload length); only stdout
frames carry MCP messages, one JSON-RPC message per line. Closing the transport detaches without
closing the container's stdin, so a later attach (for example after an agent restart) finds the
same live server and session.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import mcp.types as mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage

from dtma.adapters.docker_client import call
from dtma.adapters.stdio_lines import LineAssembler, LineTooLong
from dtma.errors import ProbeTransportError

STDOUT = 1
MAX_LINE_BYTES = 16 * 1024 * 1024  # one JSON-RPC message; a longer line ends the session
READ_CHUNK = 64 * 1024
STDIN_BATCH = 64  # messages written to a server's stdin in one go, at most

LIVENESS_ID_PREFIX = "dtma-live-"


class LivenessPinger:
    """Steady-state liveness pings written straight onto an attached stdio transport, beside
    the SDK session: a JSON-RPC `ping` with an id of our own, whose answer is taken off the
    read side before the session sees it. A hung server does not answer, and the caller's
    timeout makes it a failure; the caller grades an error answer (a 2026-07-28 server has no
    ping and says so, which is as alive as a result). About a quarter of the CPU of the SDK's
    request path, which validates every message and result as models.

    Loop-only. Bound to one transport at a time by attached_stdio_transport."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self._writer: asyncio.StreamWriter | None = None

    async def ping(self) -> str | None:
        """Send one ping and wait for its answer (no timeout here: the caller bounds it): None
        for a result, the error's message for an error. Raises ConnectionError when the
        transport is not open or ends meanwhile."""
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("the stdio transport is not open")
        key = f"{LIVENESS_ID_PREFIX}{next(self._ids)}"
        answered: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = answered
        try:
            self._writer.write(b'{"jsonrpc":"2.0","id":"%s","method":"ping"}\n' % key.encode())
            return await answered
        finally:
            self._pending.pop(key, None)

    def claim(self, line: bytes) -> bool:
        """True when `line` answers one of our pings (then the session never sees it)."""
        if not self._pending or LIVENESS_ID_PREFIX.encode() not in line:
            return False
        try:
            message = json.loads(line)
        except ValueError:
            return False
        key = message.get("id") if isinstance(message, dict) else None
        answered = self._pending.get(key) if isinstance(key, str) else None
        if answered is None:
            return False
        if not answered.done():
            error = message.get("error")
            answered.set_result(
                None
                if error is None
                else str(error.get("message") if isinstance(error, dict) else error)
            )
        return True

    def bind(self, writer: asyncio.StreamWriter | None) -> None:
        """Attach to a transport's writer, or (None) detach and fail the pings in flight."""
        self._writer = writer
        if writer is None:
            for answered in self._pending.values():
                if not answered.done():
                    answered.set_exception(ConnectionError("the stdio transport ended"))


Streams = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception],
    MemoryObjectSendStream[SessionMessage],
]


def open_attach_socket(client: Any, container_id: str) -> socket.socket:
    """Attach to stdin+stdout and return a private, non-blocking socket. Blocking: use a thread."""
    sock_io = call(
        f"attach {container_id[:12]}",
        lambda: client.api.attach_socket(
            container_id, params={"stdin": 1, "stdout": 1, "stderr": 0, "stream": 1}
        ),
    )
    raw = getattr(sock_io, "_sock", sock_io)
    if isinstance(raw, ssl.SSLSocket) or not isinstance(raw, socket.socket):
        sock_io.close()
        if isinstance(raw, socket.socket):
            raw.close()
        raise ProbeTransportError(
            "stdio attach needs a unix or plain tcp DOCKER_HOST; TLS and ssh engines are not "
            "supported for stdio servers yet"
        )
    # A dup of our own: docker-py's response object may close its copy when collected.
    own = raw.dup()
    sock_io.close()
    raw.close()
    own.setblocking(False)
    return own


@asynccontextmanager
async def attached_stdio_transport(
    sock: socket.socket,
    max_line: int = MAX_LINE_BYTES,
    on_end: Callable[[], None] | None = None,
    pinger: LivenessPinger | None = None,
) -> AsyncIterator[Streams]:
    """Yield (read, write) streams for mcp.ClientSession over an attach socket. Closes `sock`.

    A stdout line longer than `max_line` ends the read stream after a ProbeTransportError.
    `on_end` is called once the read side has ended (the server exited, the attach dropped, or
    that line), so that the session's owner can stop holding a session that can only fail.
    `pinger` is bound to this transport while it is open.
    """
    reader, writer = await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
    to_session, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    to_server, from_session = anyio.create_memory_object_stream[SessionMessage](16)

    async def pump_stdout() -> None:
        try:
            await read_frames()
        finally:
            if pinger is not None:
                pinger.bind(None)
            if on_end is not None:
                on_end()

    async def read_frames() -> None:
        lines = LineAssembler(max_line)
        async with to_session:
            with suppress(
                asyncio.IncompleteReadError,
                ConnectionError,
                anyio.ClosedResourceError,
                anyio.BrokenResourceError,
            ):
                while True:
                    header = await reader.readexactly(8)
                    remaining = int.from_bytes(header[4:8], "big")
                    # A frame may be large: read it in chunks, never all of it at once.
                    while remaining:
                        chunk = await reader.read(min(remaining, READ_CHUNK))
                        if not chunk:
                            raise asyncio.IncompleteReadError(b"", remaining)
                        remaining -= len(chunk)
                        if header[0] != STDOUT:
                            continue
                        try:
                            complete = lines.feed(chunk)
                        except LineTooLong as exc:
                            # The message boundary is lost: end the session with a clear error.
                            await to_session.send(ProbeTransportError(str(exc)))
                            return
                        for line in complete:
                            if pinger is not None and pinger.claim(line):
                                continue
                            if line.strip():
                                await to_session.send(_parse(line))

    async def pump_stdin() -> None:
        async with from_session:
            with suppress(ConnectionError, anyio.ClosedResourceError):
                async for message in from_session:
                    # Whatever else is queued goes in the same write: concurrent calls on one
                    # session cost one syscall per batch, not one per request.
                    batch = [message]
                    with suppress(anyio.WouldBlock, anyio.EndOfStream):
                        while len(batch) < STDIN_BATCH:
                            batch.append(from_session.receive_nowait())
                    writer.write(b"".join(_line(m) for m in batch))
                    await writer.drain()

    if pinger is not None:
        pinger.bind(writer)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_stdout)
            tg.start_soon(pump_stdin)
            try:
                yield from_server, to_server
            finally:
                tg.cancel_scope.cancel()
    finally:
        if pinger is not None:
            pinger.bind(None)
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


def _line(message: SessionMessage) -> bytes:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc
