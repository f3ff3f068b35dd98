"""The relay's HTTP/1.1 client (adapters/http1_client.py) against a real loopback server: it
keeps connections alive and reuses them, never reuses one that is out of step, and lets no
failure or cancellation leave a connection behind."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from dtma.adapters.http1_client import AnswerError, Http1Origin


class Server:
    """Reads POSTs with a Content-Length; answers each as `mode` says. Counts connections
    opened and closed by the client (an EOF on a connection it did not close)."""

    def __init__(self) -> None:
        self.mode = "echo"  # echo | close-idle | cut | hang | close-after
        self.opened = 0
        self.eofs: asyncio.Queue[None] = asyncio.Queue()  # one per connection the client closed
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.hanging = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.eofs.put_nowait(None)
                    return
                length = int(_field(head, b"content-length"))
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                if self.mode == "hang":
                    self.hanging.set()
                    if not await reader.read(1):
                        self.eofs.put_nowait(None)
                    return
                if self.mode == "cut":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\npartial")
                    return
                close = self.mode == "close-after"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + (b"Connection: close\r\n" if close else b"")
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if close or self.mode == "close-idle":
                    return
        finally:
            writer.close()


def _field(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} in {head!r}")


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    state = Server()
    listener = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    yield state, f"http://127.0.0.1:{port}/mcp?x=1"
    listener.close()
    await listener.wait_closed()


async def closed_by_client(state: Server, count: int = 1) -> None:
    """Wait until the client has closed `count` more connections."""
    for _ in range(count):
        await asyncio.wait_for(state.eofs.get(), 5)


async def test_calls_reuse_one_connection_and_send_the_request_as_given(
    server: tuple[Server, str],
) -> None:
    state, url = server
    origin = Http1Origin(url, connect_timeout=2, max_body=1024)
    try:
        for n in range(3):
            answer = await origin.post({"Content-Type": "application/json"}, b'{"n":%d}' % n)
            assert (answer.status, answer.body) == (200, b'{"n":%d}' % n)
    finally:
        await origin.close()
    assert state.opened == 1
    head, _ = state.requests[0]
    assert head.startswith(b"POST /mcp?x=1 HTTP/1.1\r\n")
    assert _field(head, b"host") == url.split("/")[2].encode()
    assert _field(head, b"content-type") == b"application/json"
    assert _field(head, b"accept-encoding") == b"identity"


async def test_concurrent_calls_each_get_their_own_answer(server: tuple[Server, str]) -> None:
    state, url = server
    origin = Http1Origin(url, connect_timeout=2, max_body=1024, max_connections=4)
    try:
        bodies = [b"call-%d" % n for n in range(40)]
        answers = await asyncio.gather(*(origin.post({}, body) for body in bodies))
    finally:
        await origin.close()
    assert [a.body for a in answers] == bodies
    assert 1 <= state.opened <= 4


async def test_a_connection_the_server_closed_while_idle_is_not_used(
    server: tuple[Server, str],
) -> None:
    state, url = server
    state.mode = "close-idle"
    origin = Http1Origin(url, connect_timeout=2, max_body=1024)
    try:
        assert (await origin.post({}, b"1")).body == b"1"
        await asyncio.sleep(0.05)  # the server's close reaches the client
        assert (await origin.post({}, b"2")).body == b"2"
    finally:
        await origin.close()
    assert state.opened == 2


async def test_an_answer_cut_short_fails_and_its_connection_is_dropped(
    server: tuple[Server, str],
) -> None:
    state, url = server
    state.mode = "cut"
    origin = Http1Origin(url, connect_timeout=2, max_body=1024)
    try:
        with pytest.raises(AnswerError, match="before its answer was complete"):
            await origin.post({}, b"1")
        state.mode = "echo"
        assert (await origin.post({}, b"2")).body == b"2"
    finally:
        await origin.close()
    assert state.opened == 2


async def test_a_cancelled_call_closes_its_connection(server: tuple[Server, str]) -> None:
    state, url = server
    state.mode = "hang"
    origin = Http1Origin(url, connect_timeout=2, max_body=1024)
    try:
        call = asyncio.create_task(origin.post({}, b"1"))
        await asyncio.wait_for(state.hanging.wait(), 5)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        await closed_by_client(state)
        state.mode = "echo"
        assert (await origin.post({}, b"2")).body == b"2"
    finally:
        await origin.close()
    assert state.opened == 2


async def test_idle_connections_expire_and_close_closes_them(server: tuple[Server, str]) -> None:
    state, url = server
    origin = Http1Origin(url, connect_timeout=2, max_body=1024, idle_timeout=0.05)
    try:
        await origin.post({}, b"1")
        await asyncio.sleep(0.1)
        await origin.post({}, b"2")  # the first connection had expired: closed, not used
        await closed_by_client(state)
        assert state.opened == 2
    finally:
        await origin.close()
    await closed_by_client(state)
    with pytest.raises(AnswerError, match="closed"):
        await origin.post({}, b"3")


async def test_a_connection_the_server_will_close_is_not_kept(server: tuple[Server, str]) -> None:
    state, url = server
    state.mode = "close-after"
    origin = Http1Origin(url, connect_timeout=2, max_body=1024)
    try:
        for n in range(2):
            assert (await origin.post({}, b"%d" % n)).body == b"%d" % n
    finally:
        await origin.close()
    assert state.opened == 2


async def test_an_answer_over_the_bound_is_refused(server: tuple[Server, str]) -> None:
    _, url = server
    origin = Http1Origin(url, connect_timeout=2, max_body=4)
    try:
        with pytest.raises(AnswerError, match="larger than 4 bytes"):
            await origin.post({}, b"too long")
    finally:
        await origin.close()


async def test_header_values_cannot_add_lines(server: tuple[Server, str]) -> None:
    state, url = server
    origin = Http1Origin(url, connect_timeout=2, max_body=1024)
    try:
        for value in ("a\r\nX-Evil: 1", "a\nb", "a\rb", "caf\u00e9"):
            with pytest.raises(ValueError, match="one line of ASCII"):
                await origin.post({"X-Name": value}, b"1")
    finally:
        await origin.close()
    assert state.requests == []


def test_only_plain_http_urls() -> None:
    for url in ("https://127.0.0.1:1/mcp", "unix:///x", "http:///mcp"):
        with pytest.raises(ValueError, match="not a plain http URL"):
            Http1Origin(url, connect_timeout=1, max_body=1)


async def test_a_server_that_is_not_there_is_an_os_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        origin = Http1Origin(f"http://127.0.0.1:{port}/", connect_timeout=2, max_body=1)
        with pytest.raises(ConnectionRefusedError):
            await origin.post({}, b"1")
        await origin.close()


async def test_a_path_is_percent_encoded_and_reserved_headers_are_refused(
    server: tuple[Server, str],
) -> None:
    state, url = server
    base = url.split("/mcp")[0]
    origin = Http1Origin(base + "/mcp/caf\u00e9 x?q=\u00e9", connect_timeout=2, max_body=1024)
    try:
        for name in ("Host", "content-length", "Transfer-Encoding", "Connection"):
            with pytest.raises(ValueError, match=r"sets .* itself"):
                await origin.post({name: "1"}, b"1")
        assert state.opened == 0  # refused before connecting
        await origin.post({}, b"1")
    finally:
        await origin.close()
    assert state.requests[0][0].startswith(b"POST /mcp/caf%C3%A9%20x?q=%C3%A9 HTTP/1.1\r\n")


async def test_idle_connections_are_closed_when_they_expire_without_another_call(
    server: tuple[Server, str],
) -> None:
    state, url = server
    origin = Http1Origin(url, connect_timeout=2, max_body=1024, idle_timeout=0.05)
    try:
        await origin.post({}, b"1")
        await closed_by_client(state)  # by the sweep, with no call to notice
    finally:
        await origin.close()


async def test_close_fails_busy_and_waiting_calls(server: tuple[Server, str]) -> None:
    state, url = server
    state.mode = "hang"
    origin = Http1Origin(url, connect_timeout=2, max_body=1024, max_connections=1)
    busy = asyncio.create_task(origin.post({}, b"1"))
    await asyncio.wait_for(state.hanging.wait(), 5)
    waiting = asyncio.create_task(origin.post({}, b"2"))
    await asyncio.sleep(0.01)
    await origin.close()
    for call in (busy, waiting):
        with pytest.raises(AnswerError):
            await asyncio.wait_for(call, 5)
    assert len(state.requests) == 1  # the waiting call never reached the server
