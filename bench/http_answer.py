"""What reading the relay's HTTP/1.1 answers costs (issue 20, item 6), in one run:

1. the reader alone, per answer: the hand-written reader this replaced (`http1_answer.py`, loaded
   from git history at the commit before its deletion) against `adapters/http1_reader.py`
   (llhttp through httptools), on a typical MCP answer of about 1.5 KiB: JSON with a
   Content-Length, and the same reply as an SSE event in a chunked body (whole, and in the three
   reads uvicorn's writes usually arrive in). Rounds alternate old and new; the ratio is taken
   per round.
2. a whole POST over loopback, per call: dtma's own client (`adapters/http1_client.py`, the new
   reader) against aiohttp's `ClientSession`, to a server in another process, one call at a
   time, in alternating blocks: the client process's CPU and wall time per call.

Usage: .venv/bin/python bench/http_answer.py [--rounds 10] [--answers 5000] [--calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import httptools

from dtma.adapters.http1_client import Http1Origin
from dtma.adapters.http1_reader import AnswerReader

ROOT = Path(__file__).resolve().parent.parent
OLD_PATH = "dtma/adapters/http1_answer.py"
MAX_BODY = 16 * 1024 * 1024


def _reply() -> bytes:
    text = "\n".join(f"note {n}: " + "lorem ipsum dolor sit amet " * 2 for n in range(22))
    result = {"content": [{"type": "text", "text": text}], "isError": False}
    return json.dumps({"jsonrpc": "2.0", "id": 7, "result": result}).encode()


REPLY = _reply()
JSON_ANSWER = (
    b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 10:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(REPLY), REPLY)
)
_EVENT = b"event: message\r\ndata: %s\r\n\r\n" % REPLY
SSE_PIECES = [
    b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 10:00:00 GMT\r\nserver: uvicorn\r\n"
    b"cache-control: no-cache, no-transform\r\nconnection: keep-alive\r\n"
    b"content-type: text/event-stream\r\nx-accel-buffering: no\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"%x\r\n%s\r\n" % (len(_EVENT), _EVENT),
    b"0\r\n\r\n",
]
SSE_ANSWER = b"".join(SSE_PIECES)


def load_old_reader() -> Any:
    """The hand-written reader, from the commit before the one that deleted it."""
    deleted = subprocess.run(
        ["git", "log", "-1", "--diff-filter=D", "--format=%H", "--", OLD_PATH],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ref = f"{deleted[:12]}^" if deleted else "HEAD"
    source = subprocess.run(
        ["git", "show", f"{ref}:{OLD_PATH}"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    module = types.ModuleType("old_http1_answer")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, OLD_PATH, "exec"), module.__dict__)  # noqa: S102 - our own history
    print(f"old reader: {OLD_PATH} at {ref}")
    return module.AnswerReader


def per_answer(make: Callable[[int], Any], pieces: list[bytes], count: int) -> float:
    """Seconds per answer: a new reader fed `pieces`, `count` times."""
    last = pieces[-1]
    head = pieces[:-1]
    start = time.perf_counter()
    for _ in range(count):
        reader = make(MAX_BODY)
        for piece in head:
            reader.feed(piece)
        answer = reader.feed(last)
    elapsed = time.perf_counter() - start
    assert answer is not None
    assert answer.status == 200
    return elapsed / count


def bench_readers(rounds: int, count: int) -> None:
    old = load_old_reader()
    cases = {
        "JSON, Content-Length, 1 read": [JSON_ANSWER],
        "SSE, chunked, 1 read": [SSE_ANSWER],
        "SSE, chunked, 3 reads": SSE_PIECES,
    }
    print(f"answer: {len(JSON_ANSWER)} bytes (JSON), {len(SSE_ANSWER)} bytes (SSE)")
    print("| answer | old us/answer | new us/answer | new/old (median of rounds, min-max) |")
    print("|---|---|---|---|")
    for name, pieces in cases.items():
        olds, news, ratios = [], [], []
        for _ in range(rounds):
            o = per_answer(old, pieces, count)
            n = per_answer(AnswerReader, pieces, count)
            olds.append(o)
            news.append(n)
            ratios.append(n / o)
        print(
            f"| {name} | {statistics.median(olds) * 1e6:.2f} | {statistics.median(news) * 1e6:.2f}"
            f" | {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )


class _Echo(asyncio.Protocol):
    """Answers every POST with JSON_ANSWER; requests are read by llhttp too."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(JSON_ANSWER)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def bench_clients(calls: int, block: int) -> None:
    """Runs the server in a process of its own, so that only the client's CPU is counted."""
    port = 20000 + os.getpid() % 20000
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        samples = asyncio.run(_post_in_blocks(f"http://127.0.0.1:{port}/mcp", calls, block))
    finally:
        server.terminate()
        server.wait()
    print(f"\none POST at a time to a loopback server, {calls} calls each, blocks of {block}")
    print("| client | CPU per call (median of blocks) | wall per call |")
    print("|---|---|---|")
    for name, (cpu_s, wall_s) in samples.items():
        print(
            f"| {name} | {statistics.median(cpu_s) * 1e3:.3f} ms"
            f" | {statistics.median(wall_s) * 1e3:.3f} ms |"
        )
    names = list(samples)
    extra = statistics.median(
        b - a for a, b in zip(samples[names[0]][0], samples[names[1]][0], strict=True)
    )
    print(f"aiohttp's client costs {extra * 1e3:.3f} ms more CPU per call (median of block pairs)")


async def _post_in_blocks(
    url: str, calls: int, block: int
) -> dict[str, tuple[list[float], list[float]]]:
    """CPU and wall seconds per call, per block, for each client; blocks alternate."""
    body = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_notes"}}'
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    origin = Http1Origin(url, connect_timeout=5, max_body=MAX_BODY)
    session = aiohttp.ClientSession()

    async def own() -> None:
        answer = await origin.post(headers, body)
        assert answer.body == REPLY

    async def theirs() -> None:
        async with session.post(url, data=body, headers=headers) as response:
            assert await response.read() == REPLY

    samples: dict[str, tuple[list[float], list[float]]] = {
        "dtma http1_client (llhttp reader)": ([], []),
        "aiohttp ClientSession": ([], []),
    }
    for call in (own, theirs):  # warm both: connections open, code paths hot
        for _ in range(200):
            await call()
    for _ in range(max(1, calls // block)):
        for name, call in zip(samples, (own, theirs), strict=True):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(block):
                await call()
            samples[name][0].append((time.process_time() - cpu) / block)
            samples[name][1].append((time.perf_counter() - wall) / block)
    await origin.close()
    await session.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--answers", type=int, default=5000, help="answers per round and case")
    parser.add_argument("--calls", type=int, default=3000, help="POSTs per client")
    parser.add_argument("--block", type=int, default=250)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    print(
        f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores, httptools "
        f"{httptools.__version__}, aiohttp {aiohttp.__version__}"
    )
    bench_readers(args.rounds, args.answers)
    bench_clients(args.calls, args.block)


if __name__ == "__main__":
    main()
