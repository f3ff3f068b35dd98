"""The event journal: append-only, with a monotonic cursor, plus live subscribers.

Every step of a rollout, restart or recovery is an event with a reason constant. Events are also
logged. Messages must never contain secret values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from dtma.domain.records import EventRecord

log = structlog.get_logger("dtma.events")


class EventStore(Protocol):
    async def append_event(
        self,
        kind: str,
        *,
        toolbox: str | None = None,
        server: str | None = None,
        revision: int | None = None,
        operation: str | None = None,
        reason: str = "",
        message: str = "",
    ) -> EventRecord: ...


class EventObserver(Protocol):
    """Sees every event after it is stored (the error journal, metrics)."""

    async def observe(self, event: EventRecord) -> None: ...


class Journal:
    """Appends events and wakes subscribers. Safe to call from any task on the loop."""

    def __init__(
        self,
        store: EventStore,
        redact: Callable[[str], str] = lambda s: s,
        observers: Sequence[EventObserver] = (),
    ) -> None:
        self._store = store
        self._redact = redact
        self._observers = tuple(observers)
        self._subscribers: set[asyncio.Queue[EventRecord | None]] = set()

    def redact(self, text: str, limit: int | None = None, *, tail: bool = False) -> str:
        """Mask known secret values, then cut to `limit` characters (never the other way)."""
        text = self._redact(text)
        if limit is None:
            return text
        return text[-limit:] if tail else text[:limit]

    async def emit(
        self,
        kind: str,
        *,
        toolbox: str | None = None,
        server: str | None = None,
        revision: int | None = None,
        operation: str | None = None,
        reason: str = "",
        message: str = "",
    ) -> EventRecord:
        message = self._redact(message)
        event = await self._store.append_event(
            kind,
            toolbox=toolbox,
            server=server,
            revision=revision,
            operation=operation,
            reason=reason,
            message=message,
        )
        log.info(
            kind,
            toolbox=toolbox,
            server=server,
            revision=revision,
            operation=operation,
            reason=reason or None,
            message=message or None,
            cursor=event.cursor,
        )
        for queue in list(self._subscribers):
            queue.put_nowait(event)
        for observer in self._observers:
            await observer.observe(event)
        return event

    def subscribe(self) -> asyncio.Queue[EventRecord | None]:
        """A queue of new events; None means the journal is closing (the agent is stopping)."""
        queue: asyncio.Queue[EventRecord | None] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[EventRecord | None]) -> None:
        self._subscribers.discard(queue)

    def close_subscribers(self) -> None:
        """Wake every live stream so that it ends (agent shutdown). Idempotent."""
        for queue in list(self._subscribers):
            queue.put_nowait(None)
