"""Live events over Server-Sent Events, resuming after Last-Event-ID with no gap and no duplicate.

The stream subscribes to the journal before it replays the backlog from the database, and it
only ever sends cursors greater than the last one sent; if a live event skips cursors, the
missing ones are read from the database first. Each SSE `id` is the event's cursor.

Bounds: the journal caps live streams (429 beyond). The replay reads PAGE events at a time; if
live events overflow the subscription meanwhile, they are dropped and read from the database
instead. Once live, a client that falls a whole queue behind is dropped with a final `resume`
event naming the cursor to reconnect from (Last-Event-ID or ?since=).

A client that leaves frees its slot at once: its route is `cancel_on_disconnect`, so aiohttp
cancels the stream's handler when the connection is lost (api/disconnects.py; a read-only
stream has nothing to leave half-done), and the subscription is dropped in `finally`.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from aiohttp import web

from dtma.domain.records import EventRecord
from dtma.engine.agent import Agent
from dtma.engine.journal import Subscription

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
    sub = agent.journal.subscribe()  # before prepare(): at the cap this is a plain 429
    last = since
    try:
        await resp.prepare(request)
        last = await _backfill(resp, agent, last, toolbox, sub)
        while True:
            try:
                event = await sub.get(KEEPALIVE_S)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if sub.overflowed:
                await _send_resume(resp, last, sub.maxsize)
                break
            if event is None:
                break  # the agent is stopping
            if event.cursor <= last:
                continue
            if event.cursor > last + 1:  # a live event overtook others: read them first
                last = await _backfill(resp, agent, last, toolbox, None, until=event.cursor)
            if toolbox is None or event.toolbox == toolbox:
                await _send(resp, event)
            last = max(last, event.cursor)
    except ConnectionResetError:
        pass  # the client went away: a normal end for a stream
    finally:
        agent.journal.unsubscribe(sub)
    return resp


async def _backfill(
    resp: web.StreamResponse,
    agent: Agent,
    last: int,
    toolbox: str | None,
    sub: Subscription | None,
    until: int | None = None,
) -> int:
    """Send stored events after `last` (before `until`), a page at a time. With `sub`, live
    events that overflowed its queue meanwhile are dropped: the next pages hold them."""
    while True:
        if sub is not None and sub.overflowed:
            sub.reset()
        page = await agent.repo.events(last, toolbox, PAGE)
        for event in page:
            if until is not None and event.cursor >= until:
                return last
            await _send(resp, event)
            last = event.cursor
        if len(page) < PAGE:
            return last


async def _send_resume(resp: web.StreamResponse, cursor: int, behind: int) -> None:
    data = json.dumps(
        {
            "reason": "slow_consumer",
            "cursor": cursor,
            "message": f"this stream fell {behind} events behind and is closed; reconnect with "
            f"Last-Event-ID: {cursor} (or ?since={cursor}) to resume",
        },
        separators=(",", ":"),
    )
    await resp.write(f"id: {cursor}\nevent: resume\ndata: {data}\n\n".encode())


async def _send(resp: web.StreamResponse, event: EventRecord) -> None:
    data = json.dumps(asdict(event), separators=(",", ":"))
    await resp.write(f"id: {event.cursor}\nevent: {event.kind}\ndata: {data}\n\n".encode())
