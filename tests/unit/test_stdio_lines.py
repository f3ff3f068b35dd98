"""stdio line assembly: correct splits, linear time on huge lines, and a hard cap on a line."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from dtma.adapters.docker_attach import STDOUT, attached_stdio_transport
from dtma.adapters.stdio_lines import LineAssembler, LineTooLong
from dtma.errors import ProbeTransportError

MIB = 1024 * 1024


def test_lines_split_across_and_within_chunks() -> None:
    a = LineAssembler(100)
    assert a.feed(b'{"a":') == []
    assert a.feed(b"1}\n{") == [b'{"a":1}']
    assert a.feed(b'"b":2}\n\n{"c":3}\n') == [b'{"b":2}', b"", b'{"c":3}']
    assert a.pending == 0
    assert a.feed(b"tail") == []
    assert a.pending == 4


def test_a_line_of_exactly_the_limit_passes_and_one_byte_more_fails() -> None:
    a = LineAssembler(10)
    assert a.feed(b"x" * 10 + b"\n") == [b"x" * 10]
    a.feed(b"y" * 6)
    with pytest.raises(LineTooLong, match="longer than 10 bytes"):
        a.feed(b"y" * 5)
    assert a.pending == 0  # nothing of the oversized line is kept


def test_a_limit_is_enforced_before_the_chunk_is_copied() -> None:
    a = LineAssembler(MIB)
    with pytest.raises(LineTooLong):
        a.feed(b"z" * (4 * MIB))
    assert a.pending == 0


def _assemble(total: int, chunk: int) -> float:
    a = LineAssembler(32 * MIB)
    piece = b"x" * chunk
    t0 = time.perf_counter()
    for _ in range(total // chunk):
        assert a.feed(piece) == []
    assert a.feed(b"\n") == [b"x" * total]
    return time.perf_counter() - t0


def test_a_16_mib_line_in_small_frames_costs_linear_time() -> None:
    # The old `buffer += chunk; buffer.split()` took ~4.5 s for this; linear is milliseconds.
    elapsed = _assemble(16 * MIB, 4096)
    assert elapsed < 1.0, f"16 MiB in 4 KiB frames took {elapsed:.2f}s"


def _frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


async def test_the_transport_ends_the_session_on_an_over_long_line() -> None:
    """Over a real socket pair: stderr frames are skipped, messages pass, and a line past the
    cap yields a clear ProbeTransportError and then the end of the read stream."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    ping = b'{"jsonrpc":"2.0","id":1,"result":{}}\n'
    data = _frame(2, b"noise on stderr\n") + _frame(STDOUT, ping)
    data += b"".join(_frame(STDOUT, b"a" * 60_000) for _ in range(40))  # 2.4 MB, no newline
    sender = asyncio.create_task(asyncio.to_thread(theirs.sendall, data))
    received: list[object] = []
    try:
        async with (
            attached_stdio_transport(ours, max_line=MIB) as (read, write),
            read,
            write,
            asyncio.timeout(10),
        ):
            async for item in read:
                received.append(item)
    finally:
        theirs.close()
        await asyncio.gather(sender, return_exceptions=True)
    assert len(received) == 2
    assert type(received[0]).__name__ == "SessionMessage"
    assert isinstance(received[1], ProbeTransportError)
    assert f"longer than {MIB} bytes" in str(received[1])
