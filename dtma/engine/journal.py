"""The event journal: append-only, with a monotonic cursor, plus live subscribers.

Every step of a rollout, restart or recovery is an event with a reason constant. Events are also
logged. Messages must never contain secret values.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from dtma.domain.records import EventRecord
from dtma.errors import TooManyRequests
from dtma.ports import EventStore

log = structlog.get_logger("dtma.events")

MAX_SUBSCRIBERS = 64
SUBSCRIBER_QUEUE = 1000


class EventObserver(Protocol):
    """Sees every event after it is stored (the error journal, metrics)."""

    async def observe(self, event: EventRecord) -> None: ...


class Subscription:
    """One live reader's bounded queue of new events. Loop-only, not thread-safe.

    When the reader falls `maxsize` events behind, the journal stops queueing for it and sets
    `overflowed`: the reader must end (a slow client is dropped; it resumes from its cursor) or,
    if it can re-read what it missed from the store, `reset()` and go on.
    """

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[EventRecord | None] = asyncio.Queue(maxsize)
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False

    def offer(self, event: EventRecord) -> None:
        if self.overflowed or self.closed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def close(self) -> None:
        """Wake the reader so that it ends. Idempotent."""
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def reset(self) -> None:
        """Drop what is queued and clear `overflowed` (the reader re-reads from the store)."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self.overflowed = False
        if self.closed:
            self._queue.put_nowait(None)

    async def get(self, timeout: float) -> EventRecord | None:
        """The next event; None once closed. Raises TimeoutError after `timeout` seconds."""
        if self.closed:
            return None
        return await asyncio.wait_for(self._queue.get(), timeout)


class Journal:
    """Appends events and wakes subscribers. Safe to call from any task on the loop.

    At most `max_subscribers` live subscriptions at once (TooManyRequests beyond), each with a
    queue of `queue_size` events.
    """

    def __init__(
        self,
        store: EventStore,
        redact: Callable[[str], str] = lambda s: s,
        observers: Sequence[EventObserver] = (),
        *,
        max_subscribers: int = MAX_SUBSCRIBERS,
        queue_size: int = SUBSCRIBER_QUEUE,
    ) -> None:
        self._store = store
        self._redact = redact
        self._observers = tuple(observers)
        self._subscribers: set[Subscription] = set()
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size

    def add_observer(self, observer: EventObserver) -> None:
        """See every later event too (wired once at start)."""
        self._observers = (*self._observers, observer)

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
        for sub in list(self._subscribers):
            sub.offer(event)
        for observer in self._observers:
            try:
                await observer.observe(event)
            except Exception:  # the event is recorded; one observer must not starve the others
                log.exception("event_observer_failed", observer=type(observer).__name__)
        return event

    def subscribe(self) -> Subscription:
        """A bounded subscription to new events. Raises TooManyRequests at the cap."""
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManyRequests(
                f"too many live event streams (the limit is {self.max_subscribers}, "
                "DTMA_SSE_MAX_SUBSCRIBERS); retry later or poll GET /v1/events?since=CURSOR"
            )
        sub = Subscription(self.queue_size)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close_subscribers(self) -> None:
        """Wake every live stream so that it ends (agent shutdown). Idempotent."""
        for sub in list(self._subscribers):
            sub.close()
