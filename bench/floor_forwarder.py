"""The floor under the endpoint's cost, for bench/gateway_latency.py: an aiohttp server that
forwards every POST byte for byte over dtma's own HTTP/1.1 client (adapters/http1_client.py)
to one MCP server and returns its answer byte for byte. No SDK, no authentication, no routing,
no journal: what any aiohttp relay on this machine pays for the two extra hops.

Usage: python bench/floor_forwarder.py PORT UPSTREAM_URL  (prints "ready" once listening)
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from dtma.adapters.http1_client import Http1Origin

# Not passed on (accept-encoding: dtma's client asks for identity and reads nothing else).
HOP_BY_HOP = {
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "accept-encoding",
}


async def serve(port: int, upstream: str) -> None:
    origin = Http1Origin(upstream, connect_timeout=5, max_body=16 << 20)

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        answer = await origin.post(headers, body)
        kept = {k: v for k, v in answer.headers.items() if k not in HOP_BY_HOP}
        return web.Response(status=answer.status, body=answer.body, headers=kept)

    app = web.Application()
    app.router.add_post("/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
