"""A slow SSE client is dropped with a final `resume` event and resumes without a gap: the real
API app over a real socket, on an in-process agent with the real SQLite store and Docker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dtma.adapters.docker_engine import DockerEngine
from dtma.api.app import create_app
from dtma.api.disconnects import app_runner
from dtma.client import DtmaClient
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.readiness import ReadinessMonitor
from tests.conftest import free_port
from tests.engine_fixture import EngineHarness, engine_harness

pytestmark = pytest.mark.integration

TOKEN = "sse-bounds-token-" + "x" * 16
QUEUE = 10


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[EngineHarness, int]]:
    # A day of reap grace: this agent must not touch anyone else's containers.
    async with contextlib.asynccontextmanager(engine_harness)(
        tmp_path / "state", reap_grace=86400
    ) as h:
        h.agent.journal.queue_size = QUEUE
        engine = DockerEngine(None)
        app = create_app(
            token=TOKEN, readiness=ReadinessMonitor(EngineWatch(engine)), agent=h.agent
        )
        runner = app_runner(app, access_log=None)  # as the agent serves it
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield h, port
        finally:
            await runner.cleanup()
            await engine.close()


def _open_stream(port: int, last_event_id: int | None) -> socket.socket:
    """An HTTP/1.0 SSE request (the body ends at EOF) on a socket with a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
    sock.sendall(
        f"GET /v1/events HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Accept: text/event-stream\r\n{resume}\r\n".encode()
    )
    return sock


def _read_all(sock: socket.socket, timeout: float, until: bytes = b"") -> bytes:
    """Read to EOF, or only until the SSE frame that starts with `until` is complete (then
    hang up). Blocking."""
    sock.settimeout(timeout)
    data, at = bytearray(), -1
    with sock:
        while chunk := sock.recv(1 << 16):
            data += chunk
            if until and at < 0:
                at = data.find(until, max(0, len(data) - len(chunk) - len(until)))
            if at >= 0 and data.find(b"\n\n", at) >= 0:
                break
    return bytes(data)


def _parse(raw: bytes) -> tuple[bytes, list[dict[str, Any]]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    frames = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and line[0] != ":")
        if fields:
            frames.append({**fields, "data": json.loads(fields["data"])})
    return head, frames


async def test_a_slow_client_is_dropped_with_a_resume_event_and_resumes_without_a_gap(
    served: tuple[EngineHarness, int],
) -> None:
    h, port = served
    journal = h.agent.journal
    start = (await h.repo.events(0, None, 10_000) or [None])[-1]
    since = start.cursor if start else 0
    sock = await asyncio.to_thread(_open_stream, port, since)
    for _ in range(50):
        await asyncio.sleep(0.05)
        if journal.subscribers:
            break
    assert journal.subscribers == 1
    # ~12 MB of events the client does not read: far beyond the socket buffers and the queue.
    total = 3000
    for i in range(total):
        await journal.emit("bulk", message=f"{i:05d} " + "m" * 4000)
    raw = await asyncio.to_thread(_read_all, sock, 30)
    head, frames = _parse(raw)
    assert head.startswith(b"HTTP/1.0 200"), head[:200]
    *events, final = frames
    assert final["event"] == "resume"
    assert final["data"]["reason"] == "slow_consumer"
    cursors = [int(f["id"]) for f in events]
    assert cursors == list(range(since + 1, since + 1 + len(cursors)))  # in order, no gap
    assert 0 < len(cursors) < total  # dropped before the end ...
    assert final["data"]["cursor"] == int(final["id"]) == cursors[-1]  # ... at its cursor
    assert "Last-Event-ID" in final["data"]["message"]
    assert journal.subscribers == 0

    resumed = await asyncio.to_thread(_open_stream, port, cursors[-1])
    end = since + total
    raw = await asyncio.to_thread(_read_all, resumed, 30, f"id: {end}\n".encode())
    _, frames = _parse(raw)
    rest = [int(f["id"]) for f in frames]
    assert rest == list(range(cursors[-1] + 1, end + 1))  # the rest, from the database


async def test_the_client_follows_across_a_slow_consumer_drop(
    served: tuple[EngineHarness, int],
) -> None:
    """dtma.client's follow() reconnects at the `resume` cursor: every event, once, in order."""
    h, port = served
    journal = h.agent.journal
    since = (await h.repo.events(0, None, 10_000) or [None])[-1]
    start = since.cursor if since else 0
    total, seen, resumes = 1500, [], 0
    original = journal.subscribe

    def counting_subscribe() -> Any:
        nonlocal resumes
        resumes += 1
        return original()

    journal.subscribe = counting_subscribe  # type: ignore[method-assign]
    async with DtmaClient(f"http://127.0.0.1:{port}", TOKEN) as client:
        stream = client.follow(since=start)
        await journal.emit("bulk", message="first")
        seen.append((await anext(stream)).cursor)
        for i in range(total - 1):  # the consumer does not read meanwhile
            await journal.emit("bulk", message=f"{i:05d} " + "m" * 4000)
        async with asyncio.timeout(60):
            while len(seen) < total:
                seen.append((await anext(stream)).cursor)
        await stream.aclose()
    assert seen == list(range(start + 1, start + 1 + total))
    assert resumes >= 2  # it was dropped at least once and came back
