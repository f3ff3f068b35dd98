"""The steady-state stdio liveness ping (docker_attach.LivenessPinger) over a real socket pair:
one JSON-RPC line out, its answer (result or error) taken off the read side, everything else
left to the session; no answer is no liveness; a transport that ends fails the ping at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from dtma.adapters.docker_attach import LivenessPinger


@dataclass
class Pair:
    pinger: LivenessPinger
    server_in: asyncio.StreamReader
    writers: list[asyncio.StreamWriter]

    async def request(self) -> dict[str, Any]:
        return dict(json.loads(await self.server_in.readline()))

    async def close(self) -> None:
        for w in self.writers:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=ours)
    server_in, server_out = await asyncio.open_connection(sock=theirs)
    pinger = LivenessPinger()
    pinger.bind(writer)
    p = Pair(pinger, server_in, [writer, server_out])
    yield p
    await p.close()


def _answer(key: str, **body: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": key, **body}).encode()


@pytest.mark.parametrize(
    ("answer", "graded"),
    [
        ({"result": {}}, None),
        ({"error": {"code": -32601, "message": "no such method"}}, "no such method"),
    ],
)
async def test_the_answer_to_our_id_is_taken_and_graded(
    pair: Pair, answer: dict[str, Any], graded: str | None
) -> None:
    ping = asyncio.create_task(pair.pinger.ping())
    request = await pair.request()
    assert request["method"] == "ping"
    assert request["id"].startswith("dtma-live-")
    assert not pair.pinger.claim(_answer(7, result={}))  # the session's own answers pass on
    echo = _answer(8, result={"text": request["id"]})
    assert not pair.pinger.claim(echo)  # our id inside some other message is not an answer
    assert pair.pinger.claim(_answer(request["id"], **answer))
    assert await asyncio.wait_for(ping, 1) == graded


async def test_no_answer_is_no_liveness_and_a_late_answer_passes_on(pair: Pair) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await pair.pinger.ping()
    request = await pair.request()
    assert not pair.pinger.claim(_answer(request["id"], result={}))  # the session drops it


async def test_a_transport_that_ends_fails_the_ping_in_flight_and_the_next(pair: Pair) -> None:
    ping = asyncio.create_task(pair.pinger.ping())
    await pair.request()
    pair.pinger.bind(None)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(ping, 1)
    with pytest.raises(ConnectionError, match="not open"):
        await pair.pinger.ping()
