"""Live events over Server-Sent Events, resuming after Last-Event-ID with no gap and no duplicate.

The stream subscribes to the journal before it replays the backlog from the database, and it
only ever sends cursors greater than the last one sent; if a live event skips cursors, the
missing ones are read from the database first. Each SSE `id` is the event's cursor.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

from aiohttp import web

from dtma.domain.records import EventRecord
from dtma.engine.agent import Agent

KEEPALIVE_S = 15.0
PAGE = 500


async def stream_events(
    request: web.Request, agent: Agent, since: int, toolbox: str | None
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    queue = agent.journal.subscribe()
    last = since
    try:
        last = await _backfill(resp, agent, last, toolbox)
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if event is None:
                break  # the agent is stopping
            if event.cursor <= last:
                continue
            if event.cursor > last + 1:  # a live event overtook others: read them first
                last = await _backfill(resp, agent, last, toolbox, until=event.cursor)
            if toolbox is None or event.toolbox == toolbox:
                await _send(resp, event)
            last = max(last, event.cursor)
    except ConnectionResetError:
        pass  # the client went away: a normal end for a stream
    finally:
        agent.journal.unsubscribe(queue)
    return resp


async def _backfill(
    resp: web.StreamResponse, agent: Agent, last: int, toolbox: str | None, until: int | None = None
) -> int:
    while True:
        page = await agent.repo.events(last, toolbox, PAGE)
        for event in page:
            if until is not None and event.cursor >= until:
                return last
            await _send(resp, event)
            last = event.cursor
        if len(page) < PAGE:
            return last


async def _send(resp: web.StreamResponse, event: EventRecord) -> None:
    data = json.dumps(asdict(event), separators=(",", ":"))
    await resp.write(f"id: {event.cursor}\nevent: {event.kind}\ndata: {data}\n\n".encode())
